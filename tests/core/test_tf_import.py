"""oneDNN for training, not for serving, and never against the user's environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from defectscope.core.tf_import import ONEDNN
from defectscope.core.tf_import import ONEDNN_CHOSEN_BY_DEFECTSCOPE as CHOSEN

PRINT_CHOICE = "import os; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))"
SERVE_CHOICE = "from defectscope.core.tf_import import prefer_onednn; prefer_onednn(False)"


def _choice_after(statement: str, **environment: str) -> str:
    """TF_ENABLE_ONEDNN_OPTS as a fresh interpreter sees it after ``statement``."""
    env = {k: v for k, v in os.environ.items() if k not in (ONEDNN, CHOSEN)}
    env.update(environment)
    command = [sys.executable, "-c", f"{statement}; {PRINT_CHOICE}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_training_asks_for_onednn_before_tensorflow_is_imported() -> None:
    assert _choice_after("import defectscope.training.config") == "1"
    # and TensorFlow, imported after, runs with it (its own default is off on AVX2-only CPUs)
    statement = (
        "import defectscope.training.config; "
        "from tensorflow.python.util import _pywrap_util_port as port; print(port.IsMklEnabled())"
    )
    assert _choice_after(statement).splitlines()[-2] == "True"


def test_the_users_choice_wins() -> None:
    choice = _choice_after("import defectscope.training.config", TF_ENABLE_ONEDNN_OPTS="0")
    assert choice == "0"


def test_serve_started_by_a_training_program_chooses_again() -> None:
    """A program that imported ``defectscope.training`` and then starts ``serve`` as a child
    passes its ``1`` on through the environment; that ``1`` was defectscope's, not the user's,
    so ``serve`` still runs without oneDNN. A ``1`` the user set stays."""
    statement = (
        "import defectscope.training.config, os, subprocess, sys; "
        f"child = subprocess.run([sys.executable, '-c', {SERVE_CHOICE + '; ' + PRINT_CHOICE!r}], "
        "capture_output=True, text=True, check=True); print(child.stdout.strip())"
    )
    child, parent = _choice_after(statement).splitlines()
    assert (child, parent) == ("0", "1")
    assert _choice_after(SERVE_CHOICE, TF_ENABLE_ONEDNN_OPTS="1") == "1"


def test_the_command_line_leaves_the_choice_to_each_command() -> None:
    """``serve`` runs without oneDNN: importing the CLI must not have chosen for it."""
    assert _choice_after("import defectscope.cli.main") == "None"


@pytest.mark.parametrize("enabled, expected", [(True, "1"), (False, "0")])
def test_prefer_onednn_sets_what_was_not_set(
    enabled: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from defectscope.core.tf_import import prefer_onednn

    monkeypatch.delenv(ONEDNN, raising=False)
    monkeypatch.delenv(CHOSEN, raising=False)
    prefer_onednn(enabled)
    assert os.environ[ONEDNN] == expected
    monkeypatch.setenv(CHOSEN, "")  # the value is now the user's: it stays
    prefer_onednn(not enabled)
    assert os.environ[ONEDNN] == expected
