"""Which chat template renders prompts: the model's own, a named default, or a Jinja file the user gives.

`prepare.chat_template`:
- `auto`: the model's own template; a model without one (a base model) gets `plain`;
- a name from TEMPLATES (`plain`, `chatml`): that template, also over a model's own (an override);
- a path to a `.jinja` file: its text.
The choice and its reason are recorded (prepare's stats, `peftpipe model inspect`), and the tokenizer that prepare
saves carries the template, so every later stage and the bundle render exactly what training saw.
"""

from __future__ import annotations

from pathlib import Path

from components.core.errors import ConfigError

# Question/Answer lines for base models; the reply ends with EOS, the one end-of-turn such a model knows
PLAIN = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + '\n\n' }}"
    "{% elif m['role'] == 'user' %}{{ 'Question: ' + m['content'] + '\nAnswer: ' }}"
    "{% else %}{{ m['content'] + eos_token + '\n' }}{% endif %}"
    "{% endfor %}"
)
# ChatML as SmolLM2 and Qwen write it (needs <|im_start|>/<|im_end|> in the vocabulary to be a real turn marker)
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TEMPLATES = {"plain": PLAIN, "chatml": CHATML}
AUTO = "auto"


def check_choice(choice: str) -> str:
    """Validate `prepare.chat_template` without a tokenizer (config time)."""
    if choice == AUTO or choice in TEMPLATES or choice.endswith((".jinja", ".j2")):
        return choice
    raise ValueError(f"prepare.chat_template: {choice!r} is not 'auto', a template name ({', '.join(TEMPLATES)}) "
                     "or a path to a .jinja file")


def resolve(tokenizer, choice: str = AUTO) -> tuple[str, str]:
    """(template text, why it was chosen) for this tokenizer and `prepare.chat_template`."""
    check_choice(choice)
    if choice == AUTO:
        own = getattr(tokenizer, "chat_template", None)
        if isinstance(own, dict):  # several named templates: the default one
            own = own.get("default")
        if own:
            return own, "auto: the model's own chat template"
        return PLAIN, "auto: the model has no chat template, so the plain Question/Answer layout (prepare.chat_template)"
    if choice in TEMPLATES:
        return TEMPLATES[choice], f"prepare.chat_template: {choice} (named default)"
    path = Path(choice)
    if not path.is_file():
        raise ConfigError(f"prepare.chat_template: {choice} not found")
    return path.read_text(encoding="utf-8"), f"prepare.chat_template: the file {choice}"


PROMPT_TOKENIZER = "tokenizer"  # in the prepared folder: the tokenizer with the chosen template, as trained


def apply(tokenizer, choice: str = AUTO) -> str:
    """Set the chosen template on the tokenizer (which then carries it when saved); returns why it was chosen."""
    template, why = resolve(tokenizer, choice)
    tokenizer.chat_template = template
    return why


def load_prompt_tokenizer(prepared_dir, base_dir):
    """The tokenizer prepare used (its template included); the base model's when the prepared folder has none."""
    from transformers import AutoTokenizer

    folder = Path(prepared_dir) / PROMPT_TOKENIZER if prepared_dir else None
    tokenizer = AutoTokenizer.from_pretrained(folder if folder and folder.is_dir() else base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
