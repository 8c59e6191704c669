"""The tools a person uses on a finished run; none of them is a stage of the chain.

- chat:     the side-by-side chat app: one message answered by the base model and every trained arm
- annotate: the human rating kit: blinded A/B sheets, then their scores with Fleiss' kappa
- export:   the release: D_a, the scored set and the training mix as a dataset, and every adapter with its card

They build on the library and the foundation (chain/config.py, chain/store.py), never on the runner.
"""
