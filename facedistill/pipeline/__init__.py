"""Training (torch): the Dataset and transforms, training, distillation, evaluation, the torch
side of neuron selection and ``compress``. Neither export, bench nor the runtime imports it."""
