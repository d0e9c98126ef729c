"""The transfer conditions: the registry (`registry`: what each condition takes from the
source, its options, the algorithms it works with), the hooks a condition's module implements
(`hooks`), and one module per strategy that does more than copy weights (kickstart, replay,
jsrl, qdagger, progressive, ...)."""
