"""The option table (``GenerationConfig``): typed values, one validation, names each front end can show."""

import dataclasses
import json

import pytest

from sadtalker_core.errors import OptionError
from sadtalker_core.options import (OPTIONS, OPTIONS_BY_NAME, PREPROCESS_MODES, GenerationConfig, Preprocess,
                                    validate_options)


def test_defaults_are_the_table_defaults():
    config = GenerationConfig()
    for option in OPTIONS:
        assert config.to_dict()[option.name] == option.default
    assert [f.name for f in dataclasses.fields(GenerationConfig)] == [o.name for o in OPTIONS]


def test_values_are_typed_and_the_config_is_frozen():
    config = GenerationConfig.from_options(preprocess="ExtFull", size="512", input_yaw="-20, 20",
                                           face_box=[1, 2, 30, 40], seed="-1")
    assert config.preprocess is Preprocess.EXTFULL and config.preprocess == "extfull"
    assert config.size == 512 and config.seed is None
    assert config.input_yaw == (-20.0, 20.0) and config.face_box == (1.0, 2.0, 30.0, 40.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.size = 256  # type: ignore[misc]
    plain = config.to_dict()
    assert json.loads(json.dumps(plain)) == plain
    assert plain["preprocess"] == "extfull" and plain["input_yaw"] == [-20.0, 20.0]
    assert GenerationConfig.from_options(plain) == config  # the parameters file gives the same config back


def test_a_config_passes_through_unchecked_and_overrides_are_checked():
    config = GenerationConfig.from_options(still=True)
    assert GenerationConfig.from_options(config) is config
    changed = GenerationConfig.from_options(config, size=512)
    assert changed.still and changed.size == 512
    with pytest.raises(OptionError):
        config.replace(size=300)


def test_enum_options_list_their_values_once():
    assert OPTIONS_BY_NAME["preprocess"].choices == PREPROCESS_MODES == tuple(m.value for m in Preprocess)


@pytest.mark.parametrize("name, value, label", [("size", 300, "--size"), ("face_box", [5, 5, 1, 1], "Face box"),
                                                ("blend", "smooth", "blend")])
def test_errors_name_the_option_as_each_front_end_shows_it(name, value, label):
    with pytest.raises(OptionError) as caught:
        validate_options({name: value})
    error = caught.value
    assert error.option == name and str(error).startswith(f"option '{name}': ")
    shown = error.shown_as(label)
    assert shown.startswith(f"{label}: got ") and f"'{name}'" not in shown


def test_unknown_options_are_refused_by_name():
    with pytest.raises(OptionError, match="unknown option.*presprocess"):
        GenerationConfig.from_options(presprocess="crop")


def test_idle_mode_and_a_reenacted_reference_make_the_audio_unnecessary():
    from sadtalker_core.options import GenerationConfig

    assert GenerationConfig().needs_audio
    assert not GenerationConfig.from_options(idle_seconds=2).needs_audio
    assert not GenerationConfig.from_options(ref_video="r.mp4", ref_info="all").needs_audio
    assert GenerationConfig.from_options(ref_video="r.mp4", ref_info="pose").needs_audio


def test_an_unknown_option_is_named_for_front_ends():
    from sadtalker_core.options import GenerationConfig

    with pytest.raises(OptionError) as caught:
        GenerationConfig.from_options(face_boxx=[1, 2, 3, 4])
    assert caught.value.option == "face_boxx" and caught.value.shown_as("--face_boxx").startswith(
        "--face_boxx: not an option. Known options: preprocess,")


def test_with_seed_keeps_a_given_seed_and_draws_a_random_one_otherwise():
    given = GenerationConfig.from_options(seed=7)
    assert given.with_seed() is given
    drawn = [GenerationConfig().with_seed().seed for _ in range(3)]
    assert all(isinstance(s, int) and 0 <= s < 2**48 for s in drawn) and len(set(drawn)) == 3
    assert GenerationConfig().with_seed().replace(seed=drawn[0]).seed == drawn[0]  # within the option's range
