"""Data: synthetic arithmetic problems, source-format converters, SFT tokenization."""

from aggc.data.formats import ALPACA_PROMPT, extract_answer, format_prompt, load_sft_records
from aggc.data.sft import tokenize_for_sft

__all__ = ["ALPACA_PROMPT", "extract_answer", "format_prompt", "load_sft_records", "tokenize_for_sft"]
