"""The ``python`` examples of README.md's section "Using the parts in your own pipeline": each block runs, in a fresh
namespace, as its own test (named by the label before the colon of its first comment line), so an example that no
longer matches the code fails the suite."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Using the parts in your own pipeline"

pytestmark = pytest.mark.usefixtures("one_thread")


def section_examples(text: str) -> list[tuple[str, str]]:
    """``(label, code)`` of every ```python block of the section, the label from its first ``# label: ...`` line."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    examples = []
    for code in re.findall(r"^```python\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL):
        match = re.match(r"#\s*([^:\n]+):", code)
        if match is None:
            raise ValueError(f"a README example does not start with a '# label: ...' line:\n{code[:200]}")
        examples.append((match.group(1).strip(), code))
    return examples


EXAMPLES = section_examples(README.read_text(encoding="utf-8"))


def test_section_has_examples() -> None:
    labels = [label for label, _ in EXAMPLES]
    assert len(labels) >= 7, labels
    assert len(set(labels)) == len(labels), f"two README examples share a label: {labels}"


@pytest.mark.parametrize("code", [code for _, code in EXAMPLES], ids=[label for label, _ in EXAMPLES])
def test_readme_example(code: str) -> None:
    exec(compile(code, f"{README.name} example", "exec"), {"__name__": "readme_example"})  # noqa: S102 (our own README)
