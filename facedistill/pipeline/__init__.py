"""Everything that needs torch: data, models, training, selection, distillation, stages."""
