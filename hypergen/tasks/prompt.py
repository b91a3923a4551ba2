"""Prompt building through the base model's chat template.

By default the prompt holds the instance input only: the task description reaches the model through
the adapter, which is the point of the product. `description=` puts it in the prompt as well (the
`base_desc` reference and `hypergen answer --description`).
"""

from __future__ import annotations


def build_messages(text: str, description: str | None = None) -> list[dict[str, str]]:
    """Chat messages for one input; the description, if any, leads the user turn (SNI style)."""
    content = f"{description.strip()}\n\n{text}" if description else text
    return [{"role": "user", "content": content}]


def format_prompt(tokenizer, text: str, description: str | None = None) -> str:
    """The full prompt string up to where the assistant's answer starts."""
    return tokenizer.apply_chat_template(
        build_messages(text, description), tokenize=False, add_generation_prompt=True
    )
