"""Where runs saved by earlier versions of imgcls find their loggers.

Their ``config.yaml`` names ``imgcls.loggers.RunCSVLogger`` (and ``imgcls.loggers.WandbLogger``)
as ``class_path``; the loggers live in ``imgcls.training.loggers`` now. This module keeps those
names loading, so an old run still tests, resumes and exports. New configs name the new home.
"""

from imgcls.training.loggers import RunCSVLogger, WandbLogger

__all__ = ["RunCSVLogger", "WandbLogger"]
