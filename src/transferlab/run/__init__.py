"""One run and its records: the job itself, resume, checkpoints, results, loggers, source pretraining."""
