"""The networks and their checkpoints (torch): TNet/SNet1-3 (:mod:`.models`) and the one loader
for ``.pt`` checkpoints (:mod:`.checkpoint`) that training, export and bench all use."""
