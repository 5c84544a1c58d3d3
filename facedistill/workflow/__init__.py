"""``facedistill pipeline``: the resumable stages (:mod:`.stages`) that chain data, training,
selection, export and bench, and the report they end in (:mod:`.report`). The one package that
imports both :mod:`facedistill.pipeline` (training) and :mod:`facedistill.export`."""
