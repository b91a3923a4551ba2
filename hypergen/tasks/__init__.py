"""Tasks: loading (BIG-bench, Super-NaturalInstructions, our JSONL, the OpenAI evals, or any registered reader), prompts, metrics and splits."""

# Importing a reader registers it with load_suite; the order here is the order formats are tried.
from . import bigbench, jsonl, sni  # noqa: F401
from . import openai_evals  # noqa: F401  (last: it takes only the evals wheel)
from .bigbench import bigbench_root, fetch_bigbench
from .core import Instance, Reader, Task, TaskSuite, load_suite, readers, register_reader
from .metrics import exact_match, macro_average, normalize_answer, rouge_l
from .prompt import build_messages, format_prompt
from .split import Split, SplitCriteria, load_split, make_split

__all__ = [
    "Instance",
    "Reader",
    "Split",
    "SplitCriteria",
    "Task",
    "TaskSuite",
    "bigbench_root",
    "build_messages",
    "exact_match",
    "fetch_bigbench",
    "format_prompt",
    "load_split",
    "load_suite",
    "macro_average",
    "make_split",
    "normalize_answer",
    "readers",
    "register_reader",
    "rouge_l",
]
