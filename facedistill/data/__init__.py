"""Face data without torch: the CelebA reader (:mod:`.celeba`), the dataset check (:mod:`.check`)
and the embedded synthetic generator (:mod:`.synth`). The torch Dataset and the training
transforms are :mod:`facedistill.pipeline.data`."""
