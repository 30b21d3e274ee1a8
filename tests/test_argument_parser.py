"""The one argument helper of the training commands: `list[int]` fields from `1,2,4` or `1 2 4`, clear errors."""

import argparse
from dataclasses import dataclass, field

import pytest

from flextok_hf.argument_parser import FlexTokArgumentParser, IntListAction, parse_int_list
from flextok_hf.training.arguments import FlexTokTrainingArguments


@dataclass
class Example:
    budgets: list[int] = field(default_factory=lambda: [1, 2])
    levels: list[int] | None = None
    flag: bool | None = None


def parse(*argv):
    return FlexTokArgumentParser(Example).parse(list(argv))[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--budgets", "1,2,4"], [1, 2, 4]),
        (["--budgets", "1", "2", "4"], [1, 2, 4]),
        (["--budgets", "1,2", "4"], [1, 2, 4]),
        (["--budgets", "8"], [8]),
        (["--budgets=3,5"], [3, 5]),
    ],
)
def test_int_list_forms(argv, expected):
    assert parse(*argv).budgets == expected


def test_defaults_and_optional_fields():
    parsed = parse()
    assert parsed.budgets == [1, 2] and parsed.levels is None and parsed.flag is None
    assert parse("--levels", "8,5,5,5").levels == [8, 5, 5, 5]
    assert parse("--flag").flag is True and parse("--flag", "false").flag is False


@pytest.mark.parametrize("value", ["1,x", "1.5", ",", "a b"])
def test_bad_values_name_the_argument(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("--levels", value)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --levels" in error and "`--levels` must" in error and value in error


def test_parse_accepts_dicts_json_and_parsed_tuples(tmp_path):
    parser = FlexTokArgumentParser(Example)
    assert parser.parse({"levels": [4, 4]})[0].levels == [4, 4]
    (tmp_path / "args.json").write_text('{"budgets": [3, 6]}')
    assert parser.parse([str(tmp_path / "args.json")])[0].budgets == [3, 6]
    parsed = (Example(),)
    assert parser.parse(parsed) is parsed


def test_parse_int_list_function():
    assert parse_int_list("1, 2,4", "budgets") == [1, 2, 4]
    assert parse_int_list([1, "2,3"], "budgets") == [1, 2, 3]
    with pytest.raises(ValueError, match="`budgets` must hold integers >= 1"):
        parse_int_list("0,4", "budgets", minimum=1)
    with pytest.raises(ValueError, match="`budgets` must hold at least one integer"):
        parse_int_list("", "budgets")
    with pytest.raises(ValueError, match="`budgets` must be integers"):
        parse_int_list(1.5, "budgets")


def test_int_list_action_on_a_plain_argparse_parser(capsys):
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--budgets", action=IntListAction, minimum=1, default=None)
    assert parser.parse_args(["--budgets", "1,4", "16"]).budgets == [1, 4, 16]
    assert parser.parse_args([]).budgets is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--budgets", "0,4"])
    assert "argument --budgets: `--budgets` must hold integers >= 1" in capsys.readouterr().err


def test_training_arguments_string_lists_and_required_values(tmp_path):
    from flextok_hf.training.tokenizer_arguments import TokenizerModelArguments, TokenizerTrainingArguments

    assert TokenizerModelArguments(fsq_levels="8,5,5,5").fsq_levels == [8, 5, 5, 5]
    args = TokenizerTrainingArguments(output_dir=str(tmp_path), sample_budgets="1 2 4")
    assert args.sample_budgets == [1, 2, 4] and args.remove_unused_columns is False and args.label_names == []
    with pytest.raises(ValueError, match="`sample_budgets` must be integers"):
        TokenizerTrainingArguments(output_dir=str(tmp_path), sample_budgets="1,two")
    with pytest.raises(ValueError, match="`remove_unused_columns` must be False"):
        FlexTokTrainingArguments(output_dir=str(tmp_path), remove_unused_columns=True)
    assert isinstance(FlexTokTrainingArguments(output_dir=str(tmp_path)).bf16, bool)


def test_every_training_entry_point_shares_the_base():
    from flextok_hf.training.classifier import ClassifierTrainingArguments
    from flextok_hf.training.lora import LoraTrainingArguments
    from flextok_hf.training.prior import PriorTrainingArguments
    from flextok_hf.training.tokenizer_arguments import TokenizerTrainingArguments
    from flextok_hf.training.vae import VAETrainingArguments

    for cls in (
        TokenizerTrainingArguments,
        LoraTrainingArguments,
        VAETrainingArguments,
        PriorTrainingArguments,
        ClassifierTrainingArguments,
    ):
        assert issubclass(cls, FlexTokTrainingArguments), cls
    assert PriorTrainingArguments.required_values["prediction_loss_only"] is True


def test_documented_command_lines(tmp_path):
    """The list forms used in README.md, TRAINING.md and the model cards parse through the real commands."""
    from flextok_hf.cli import build_parser
    from flextok_hf.commands.reconstruct import parse_budgets
    from flextok_hf.training.classifier import parse_classifier_args
    from flextok_hf.training.tokenizer import parse_tokenizer_args
    from flextok_hf.training.vae import parse_vae_args

    parser = build_parser()
    evaluate = parser.parse_args(
        ["evaluate", "--model", "m", "--dataset", "mnist", "--seeds", "0,1", "--output-dir", "out"]
    )
    assert evaluate.seeds == [0, 1] and evaluate.budgets is None
    generation = parser.parse_args(["evaluate-generation", "--budgets", "1,2,4,8,16,32", "--output-dir", "out"])
    assert generation.budgets == [1, 2, 4, 8, 16, 32]
    assert parse_budgets("1,4,16,32") == [1, 4, 16, 32]
    output = ["--output_dir", str(tmp_path)]
    model_args, _, training_args = parse_tokenizer_args(
        ["--config", "cpu_32px", "--encoder_hidden_size", "128", "--fsq_levels", "8,5,5,5", "--sample_budgets", "1",
         "2", "4", *output]
    )  # fmt: skip
    assert model_args.fsq_levels == [8, 5, 5, 5] and training_args.sample_budgets == [1, 2, 4]
    assert parse_vae_args(["--block_out_channels", "32,64,64", *output])[0].block_out_channels == [32, 64, 64]
    assert parse_classifier_args(["--widths", "4", "8", *output])[0].widths == [4, 8]
