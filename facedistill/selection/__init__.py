"""Neuron selection without torch: the mean-field solver (:mod:`.solver`) and the
``selection.json`` file (:mod:`.file`). The torch side, collecting the teachers' responses and
the ``facedistill select`` command, is :mod:`facedistill.pipeline.selection`."""
