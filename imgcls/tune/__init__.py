"""Hyper-parameter search on Optuna: ``imgcls tune``. Each trial is a real ``imgcls fit`` run;
the study lives in SQLite by default or in any SQLAlchemy database shared by many processes."""
