"""The engine: the mathematics, the model state and the learning policy, with no face above it.

Everything a face (scikit-learn style, River, Beam, torch) needs to score and train a model lives
here, once: the temperature convention and schedule (:mod:`~streamrbf.core.temperature`), the
mappings (:mod:`~streamrbf.core.mappings`), the losses (:mod:`~streamrbf.core.losses`), sufficient
statistics and the step (:mod:`~streamrbf.core.statistics`), seeding
(:mod:`~streamrbf.core.seeding`), the value rule for input (:mod:`~streamrbf.core.validation`),
safe model files (:mod:`~streamrbf.core.persistence`) and the records adapters emit
(:mod:`~streamrbf.core.assignment`). The compiled kernels are private modules.

The core imports no face and no host framework (River, Beam, scikit-learn); a test keeps it so.
Modules load on first use: River's per-event path imports the kernels and the seeding, never
torch.
"""

from __future__ import annotations
