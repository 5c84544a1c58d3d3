"""Configuration: one typed, frozen dataclass per command (:mod:`.fields` makes the click
options from it) and the TOML files whose tables mirror the commands (:mod:`.loader`)."""

from facedistill.config.data import SynthConfig
from facedistill.config.export import (
    EXPORT_PRECISIONS,
    BenchConfig,
    ExportConfig,
    IntList,
    export_precisions,
    int_list,
    want_trt,
)
from facedistill.config.fields import (
    Opt,
    build,
    check_choices,
    config_command,
    configs_of,
    key_name,
    key_record,
    opt,
    option_label,
)
from facedistill.config.loader import (
    NumberList,
    command_at,
    config_table,
    load_default_map,
    option_default,
    option_key,
    read_toml,
    table_options,
    to_default_map,
    toml_keys,
    toml_type_error,
    unknown_name,
)
from facedistill.config.pipeline import PipelineOptions
from facedistill.config.train import (
    ARCHS,
    DistillConfig,
    EvalConfig,
    SelectConfig,
    TrainConfig,
    TrainOptions,
    parse_term_weights,
)

__all__ = [
    "ARCHS", "EXPORT_PRECISIONS", "BenchConfig", "DistillConfig", "ExportConfig", "IntList",
    "NumberList", "Opt", "SelectConfig", "SynthConfig", "TrainConfig", "TrainOptions", "build",
    "check_choices", "command_at", "config_command", "config_table", "configs_of",
    "export_precisions", "int_list", "key_name", "key_record", "load_default_map", "opt",
    "option_default", "option_key", "option_label", "parse_term_weights", "read_toml",
    "table_options", "to_default_map", "toml_keys", "toml_type_error", "unknown_name", "want_trt", "PipelineOptions", "EvalConfig",
]
