"""kick-hf's generation stop at the end of the first non-empty line (the ``FIRST_LINE`` marker's meaning)."""

from __future__ import annotations

import torch
from transformers import StoppingCriteria

from kick_common.stops import first_line_done


class FirstLineStop(StoppingCriteria):
    """Per sequence: done once the new tokens (after ``prompt_len``) decode to a complete first line."""

    def __init__(self, tokenizer, prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        new = input_ids[:, self.prompt_len:]  # [batch, generated so far]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return torch.tensor([first_line_done(t) for t in texts], dtype=torch.bool, device=input_ids.device)
