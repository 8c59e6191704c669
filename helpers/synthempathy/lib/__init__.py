"""The library of the reproduction: every concept the stages share, one module each.

Nothing here imports a stage module (data, generate, quality, diversity, finetune, evaluate), the machinery
or a tool; the library builds only on the config schema and the artifact store (chain/config.py,
chain/store.py).

- dialogue:      the prompt file (prompts.yaml), chat messages, Speaker/Listener transcripts
- authors:       the authors' own prompt texts, read at run time from their scripts at a pinned commit
- authors_data:  the authors' released data: their file read, ED told apart, the arm authors_data, beside ours
- backends:      a model that answers chats, in process or at OpenAI-compatible endpoints (`make_backend`)
- served:        the check that every evaluation server serves each adapter from its folder, as it is
- prefix:        batches whose shared prompt prefix is encoded once
- models:        model specs (packaged, local, hub) -> tokenizers and causal LMs
- embedding:     the cached sentence embedder (`embedder(cfg, store)`)
- sft:           LoRA / QLoRA supervised fine-tuning, resumable, and what an adapter is trained on (counted)
- arms:          the comparison arms, the random control, the sweep points, per training seed
- judging:       the LLM judge's expected 1..3 scores, and its sanity panel
- pairwise:      the A/B judge: two replies compared in both orders, win / tie / lose with intervals
- selection:     the paper's two filters: S = 100 cos >= T, and K-Center-Greedy over D_q
- kcenter:       the exact fast K-Center-Greedy kernel and its coverage radius
- set_diversity: how spread out a set is in embedding space
- ed, ed_record, ed_rows: EmpatheticDialogues in every form it comes in
- tokens, metrics, bootstrap: the authors' automatic metrics and their intervals (over examples and seeds)
- results:       the results table, headline differences with their power, and the plain verdict
- stage:         what opening a stage means (config as the stage sees it, seeds, run folder)
"""
