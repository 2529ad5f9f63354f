"""Under the stock lm_eval CLI (only lm-eval's logger configured) kick's INFO lines reach lm-eval's handler."""

import logging

import pytest

from kick_models.registration import KICK_LOGGERS, follow_lm_eval_logging


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def lm_eval_only_logging(monkeypatch):
    """Loggers as lm-eval's setup_logging leaves them: a handler on ``lm_eval``, none on the root."""
    collect = _Collect()
    source = logging.getLogger("lm_eval")
    monkeypatch.setattr(source, "handlers", [collect])
    monkeypatch.setattr(source, "level", logging.INFO)
    for name in KICK_LOGGERS:
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "handlers", [])
        monkeypatch.setattr(logger, "level", logging.NOTSET)
    return collect


def test_kick_info_reaches_lm_eval_handler(lm_eval_only_logging, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest adds its own for the test body
    follow_lm_eval_logging()
    logging.getLogger("kick_models.lm").info("kick-hf: wanda unstructured sparsity=0.5000")
    logging.getLogger("kick_models.lm").debug("not at INFO")
    assert lm_eval_only_logging.lines == ["kick-hf: wanda unstructured sparsity=0.5000"]


def test_left_alone_when_the_application_configured_logging(lm_eval_only_logging, monkeypatch):
    monkeypatch.setattr(logging.getLogger(), "handlers", [logging.NullHandler()])
    follow_lm_eval_logging()
    assert all(not logging.getLogger(name).handlers for name in KICK_LOGGERS)
