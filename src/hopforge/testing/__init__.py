"""Test doubles shipped with the package: the scripted OpenAI-compatible server used by the tests,
the benchmarks and the reliability suite. Nothing in the pipeline's stages imports from here."""
