"""The machinery that runs and records a chain of the six stages; none of it is the method itself.

- config:   the one config schema: profiles, overrides, and which stage reads which key
- store:    the one artifact store: every run file is written, read, hashed and locked here
- runner:   the papermill chain: the numbered notebooks in order, skipping stages that are up to date
- progress: what the terminal shows while a stage's notebook runs
- report:   the run's static site (runs/<profile>/report/)
- plan:     the dry run: models, memory and requests of a profile, before running any of it
- cli:      the one command line (`python -m synthempathy ...`)

config and store are the foundation: they import nothing else of the package, and the library and the stages
build on them. This file imports nothing, so that importing the store does not load the runner.
"""
