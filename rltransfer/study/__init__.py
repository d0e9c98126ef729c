"""A study's planning and execution: the study spec and its checks, the plan, pre-flight
checks, the study folder and its lock, the scheduler and where runs execute (this process,
worker processes, Ray), the caches of sources and scratch runs, the runner that ties them
together, budgets, progress, the normalized score's scale (`score_scale`), and the transfer
matrix (comparing finished studies is the report stage's `rltransfer.report.compare`)."""
