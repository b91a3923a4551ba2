"""Tasks: loading (BIG-bench, Super-NaturalInstructions, our JSONL), prompts, metrics and splits."""

from .bigbench import bigbench_root, fetch_bigbench
from .core import Instance, Task, TaskSuite, load_suite
from .metrics import exact_match, macro_average, normalize_answer, rouge_l
from .prompt import build_messages, format_prompt
from .split import Split, SplitCriteria, load_split, make_split

__all__ = [
    "Instance",
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
    "rouge_l",
]
