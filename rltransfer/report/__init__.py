"""The report stage: reading run folders (`runfiles`), metrics and their intervals
(`metrics`, `curves`, `sequential`), the verdict, the tables, figures and pages, and the
TensorBoard views (`board`). `build` ties them into a study's report. Nothing here imports
torch or SB3."""
