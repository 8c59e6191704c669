import pytest

from synthempathy.chain.config import CONFIG_DIR, Config, ConfigError, load_config


@pytest.mark.parametrize("profile", ["tiny", "small", "paper", "one_gpu"])
def test_every_shipped_profile_validates(profile):
    cfg = load_config(profile)
    assert cfg.profile == profile
    assert cfg.run_dir.name == profile


def test_paper_profile_holds_the_authors_settings():
    cfg = load_config("paper")
    assert (cfg.passes, cfg.temperature, cfg.top_p, cfg.gen_max_new_tokens) == (5, 0.8, 0.9, 300)
    assert (cfg.threshold, cfg.kcenter_ratio, cfg.quantization) == (60.0, 0.9, "none")  # the authors' bf16 LoRA; 4bit is one key away
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.learning_rate, cfg.max_length) == (8, 32, 0.1, 1e-4, 512)
    assert not cfg.format_example and not cfg.prefill  # their instruction alone (gen_prompt: authors)
    assert cfg.embedder_prompt_name == "query"


def test_overrides_are_typed_from_strings():
    cfg = load_config("tiny", ["threshold=50", "arms=[ed]", "max_seed_records=10"])
    assert cfg.threshold == 50.0 and cfg.arms == ["ed"] and cfg.max_seed_records == 10


@pytest.mark.parametrize("override, key, words", [
    ({"threshold": 120}, "threshold", "0..100"),
    ({"threshold": -1}, "threshold", "0..100"),
    ({"kcenter_ratio": 0}, "kcenter_ratio", "(0, 1]"),
    ({"kcenter_ratio": 1.5}, "kcenter_ratio", "(0, 1]"),
    ({"passes": "many"}, "passes", "integer"),
    ({"tresh": 60}, "tresh", "unknown key"),
])
def test_bad_override_names_key_and_profile(override, key, words):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", override)
    msg = str(e.value)
    assert key in msg and words in msg and "tiny.yaml" in msg


def test_bad_profile_file_names_key_and_file(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("threshold: 60\nthreshhold: 50\npasses: two\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(bad))
    msg = str(e.value)
    assert str(bad) in msg and "unknown key 'threshhold'" in msg and "'passes'" in msg


def test_missing_profile_lists_known_ones():
    with pytest.raises(ConfigError, match="known profiles: one_gpu, paper, small, tiny"):
        load_config("huge")


def test_profiles_only_use_schema_keys():
    import yaml

    for path in CONFIG_DIR.glob("*.yaml"):
        assert set(yaml.safe_load(path.read_text())) <= set(Config.model_fields), path


@pytest.mark.parametrize("profile", ["tiny", "small", "paper", "one_gpu"])
def test_every_profile_trains_the_random_control_and_compares_it(profile):
    cfg = load_config(profile)
    assert {"ed", "synth_empathy", "ed_plus_random"} <= set(cfg.arms) and cfg.train_seeds
    assert ("synth_empathy", "ed_plus_random") in cfg.ab_comparisons and ("synth_empathy", "ed") in cfg.ab_comparisons
    assert cfg.max_steps is None, "every adapter makes full passes over its own data"


def test_small_and_paper_run_the_full_design():
    for profile in ("small", "paper"):
        cfg = load_config(profile)
        assert len(cfg.train_seeds) >= 3 and cfg.sweep_thresholds
    assert set(load_config("paper").arms) == {"ed", "synth_empathy", "ed_plus_random", "ed_plus_all", "ed_plus_quality"}


def test_default_ab_pairs_follow_the_trained_arms():
    assert load_config("tiny", {"arms": ["ed", "synth_empathy"]}).ab_comparisons == [("synth_empathy", "ed")]
    assert load_config("tiny", {"arms": ["ed"]}).ab_comparisons == []
    assert load_config("tiny", {"ab_pairs": ["ed_plus_random:ed"]}).ab_comparisons == [("ed_plus_random", "ed")]


# -- placement: which GPUs each part uses --------------------------------------------------------------------------

def test_paper_places_its_servers_and_its_own_models():
    cfg = load_config("paper")
    assert cfg.in_process_gpu == 4
    assert [(s.url, s.gpus, s.utilization) for s in cfg.placed_servers] == [
        ("http://localhost:8000/v1", (0, 1, 2, 3), 0.9), ("http://localhost:8001/v1", (5,), 0.9)]
    assert load_config("tiny").placed_servers == [] and load_config("tiny").in_process_gpu is None


@pytest.mark.parametrize("entry, words", [
    ("http://localhost:8000/v1 gpus=0", "expected '<url> gpus="),
    ("localhost:8000 gpus=0 utilization=0.5", "expected '<url> gpus="),
    ("http://localhost:8000/v1 gpus=zero utilization=0.5", "expected '<url> gpus="),
    ("http://localhost:8000/v1 gpus=0 utilization=0.5 tp=2", "expected '<url> gpus="),
    ("", "expected '<url> gpus="),
    ("http://localhost:8000/v1 gpus=0,0 utilization=0.5", "distinct CUDA indices"),
    ("http://localhost:8000/v1 gpus=0 utilization=1.5", "within (0, 1]"),
    ("http://localhost:8000/v1 gpus=0 utilization=0", "within (0, 1]"),
])
def test_a_bad_server_entry_names_the_key_the_entry_and_the_profile(entry, words):
    with pytest.raises(ConfigError) as e:
        load_config("paper", {"servers": [entry]})
    msg = str(e.value)
    assert "key 'servers'" in msg and repr(entry) in msg and words in msg and "paper.yaml" in msg


def test_a_server_described_twice_is_refused():
    entry = "http://localhost:8000/v1 gpus=0 utilization=0.5"
    with pytest.raises(ConfigError, match="servers.*describes http://localhost:8000/v1 twice"):
        load_config("paper", {"servers": [entry, entry.replace("gpus=0", "gpus=1")]})


def test_in_process_gpu_is_a_cuda_index_and_needs_cuda(tmp_path):
    with pytest.raises(ConfigError, match=r"tiny.yaml\): key 'in_process_gpu': .*greater than or equal to 0"):
        load_config("tiny", {"in_process_gpu": -1})
    with pytest.raises(ConfigError, match=r"tiny.yaml\): in_process_gpu 1 is set but device is cpu"):
        load_config("tiny", {"in_process_gpu": 1, "device": "cpu"})
    bad = tmp_path / "mine.yaml"
    bad.write_text("device: cpu\nin_process_gpu: 0\n")
    with pytest.raises(ConfigError, match=f"{bad}: in_process_gpu 0 is set but device is cpu"):
        load_config(str(bad))


def test_placement_is_not_fingerprinted():
    """The same computation on another GPU: moving a part does not rerun a stage."""
    from synthempathy.chain import runner

    cfg = load_config("paper")
    moved = load_config("paper", {"in_process_gpu": 6, "servers": ["http://localhost:8000/v1 gpus=4 utilization=0.5"]})
    for stage in ("01_generate", "02_quality", "05_evaluate"):
        assert runner.stage_config(cfg, stage) == runner.stage_config(moved, stage)
