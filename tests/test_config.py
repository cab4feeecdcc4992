import pytest

from in2r_graph.config import Config, ConfigError, dump_config, load_config


def test_defaults_are_valid():
    config = load_config()
    assert config.train.method == "in2r"
    assert config.data.noise_ratio == 0.4
    assert config.rectify.rectify_images and config.rectify.rectify_texts


def test_set_overrides_with_dotted_and_bare_keys():
    config = load_config(overrides=["rectify.k=5", "epochs=3", "lr_decay_epochs=[1, 2]", "query_node=true"])
    assert config.rectify.k == 5
    assert config.train.epochs == 3
    assert config.train.lr_decay_epochs == [1, 2]
    assert config.rectify.query_node is True


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'rectify.refiner'"):
        load_config(overrides=["rectify.refinr=gat"])


def test_bad_values_rejected():
    cases = {
        "data.noise_ratio=1.0": "noise_ratio",
        "data.noise_ratio=abc": "not a valid float",
        "rectify.k=0": "at least 1 neighbour",
        "train.batch_size=0": "batch_size",
        "train.epochs=1.5": "not a valid int",
        "rectify.topology=ring": "expected one of complete",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_config(overrides=[override])


def test_k_larger_than_bank_rejected():
    with pytest.raises(ConfigError, match="larger than rectify.bank_size"):
        load_config(overrides=["rectify.k=20", "rectify.bank_size=10"])


def test_yaml_round_trip(tmp_path):
    config = load_config(overrides=["rectify.refiner=gat", "train.seed=7"])
    path = tmp_path / "config.yaml"
    dump_config(config, path)
    again = load_config(path)
    assert again == config


def test_yaml_unknown_section(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_empty_optional_value():
    config = Config()
    config.set("data.noise_file", "")
    assert config.data.noise_file is None
