"""The BERT text encoders the families share: DLF's ``BertText`` (frozen or fine-tuned, no pooler) and
``FineTunedBert`` (with its pooler) of MAG-BERT, MISA and DMD.

``BertText`` wraps ``transformers.BertModel.from_pretrained(path_or_name)`` over the ``text_bert``
array (rows input_ids, attention_mask, token_type_ids); ``bert_config_from_state`` rebuilds its
architecture from saved weights, so a checkpoint loads without the original folder or a hub.
"""
from __future__ import annotations

import contextlib
import re
from typing import Mapping

import torch
from torch import nn

from dlf.errors import DLFError

__all__ = ["BertText", "FineTunedBert", "load_bert", "bert_config_from_state", "check_token_ids", "BERT_PREFIX"]

BERT_PREFIX = "text_encoder.bert."  # where a model's BertText weights sit in its state_dict


class BertText(nn.Module):
    """A ``transformers.BertModel`` (no pooler: DLF reads the last hidden state only) over ``text_bert``.

    ``frozen``: no gradients and the encoder always in eval mode. ``config`` (a BertConfig dict) builds
    the architecture without downloading weights, for loading a saved checkpoint.
    """

    def __init__(self, pretrained: str, frozen: bool, config: Mapping | None = None):
        super().__init__()
        self.bert = load_bert(pretrained, config, pooler=False)
        self.frozen = frozen
        if frozen:
            self.bert.requires_grad_(False)
            self.bert.eval()
        self.width = int(self.bert.config.hidden_size)

    def train(self, mode: bool = True) -> BertText:
        super().train(mode)
        if self.frozen:
            self.bert.eval()
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 3, T): rows input_ids, attention_mask, token_type_ids -> last hidden state (B, T, width)."""
        ids, mask, types = tokens[:, 0].long(), tokens[:, 1].long(), tokens[:, 2].long()
        ctx = torch.no_grad() if self.frozen else contextlib.nullcontext()
        with ctx:
            return self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state


def load_bert(pretrained: str, config: Mapping | None, pooler: bool) -> nn.Module:
    """``BertModel.from_pretrained(pretrained)``, or the bare architecture from ``config`` (a BertConfig
    dict) when a checkpoint supplies the weights; any failure is one line naming ``model.pretrained``."""
    from transformers import BertConfig, BertModel  # heavy and only needed in the BERT modes
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # a checkpoint's unused heads (pooler, MLM, NSP) are expected
    hf_logging.disable_progress_bar()  # stderr carries the CLI's messages only
    try:
        if config is not None:
            return BertModel(BertConfig.from_dict(dict(config)), add_pooling_layer=pooler)
        return BertModel.from_pretrained(pretrained, add_pooling_layer=pooler)
    except (OSError, ValueError) as err:
        raise DLFError(f"model.pretrained={pretrained!r}: cannot load a BERT model ({str(err).splitlines()[0]}); "
                       f"give a local folder saved with save_pretrained, or a hub name with network access") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class FineTunedBert(nn.Module):
    """``BertModel`` with its pooler, trained with the rest of the model (MAG-BERT, MISA, DMD): the
    caller runs ``self.bert`` itself, since some models change its inputs (MAG-BERT's gate)."""

    frozen = False  # read by the trainer (dlf.train.loop._lane_pool): BERT's own dropout is torch's

    def __init__(self, pretrained: str, config: Mapping | None = None):
        super().__init__()
        self.bert = load_bert(pretrained, config, pooler=True).float()  # the heads around it are float32
        self.width = int(self.bert.config.hidden_size)


def check_token_ids(ids: torch.Tensor, vocab: int) -> None:
    """Token ids past BERT's vocabulary would fail deep inside the embedding: one line instead."""
    top = int(ids.max()) if ids.numel() else 0
    if top >= vocab:
        raise DLFError(f"text_bert holds token id {top}, but the BERT of model.pretrained has a vocabulary of "
                       f"{vocab}; tokenize the text with that BERT's tokenizer or load the BERT the ids are for")


def bert_config_from_state(state: Mapping[str, torch.Tensor], prefix: str = BERT_PREFIX) -> dict:
    """A BertConfig dict inferred from BERT weight shapes; heads = hidden // 64 (the BERT-family convention)."""
    vocab, hidden = state[prefix + "embeddings.word_embeddings.weight"].shape
    layers = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"encoder\.layer\.(\d+)\.", k))}
    return {"model_type": "bert", "vocab_size": int(vocab), "hidden_size": int(hidden),
            "num_hidden_layers": len(layers), "num_attention_heads": max(1, int(hidden) // 64),
            "intermediate_size": int(state[prefix + "encoder.layer.0.intermediate.dense.weight"].shape[0]),
            "max_position_embeddings": int(state[prefix + "embeddings.position_embeddings.weight"].shape[0]),
            "type_vocab_size": int(state[prefix + "embeddings.token_type_embeddings.weight"].shape[0])}
