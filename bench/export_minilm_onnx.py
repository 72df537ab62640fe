#!/usr/bin/env python3
"""Export all-MiniLM-L6-v2's transformer to ONNX (models/all-MiniLM-L6-v2/model.onnx) for the
onnxruntime peer of bench/embed_vs_peers.py. Needs torch, transformers and onnx, so it runs
once in the throwaway venv of tests/data/make_minilm_reference.py, never in CI:

    HF_HUB_OFFLINE=1 ~/st-venv/bin/python bench/export_minilm_onnx.py models/all-MiniLM-L6-v2

The graph takes input_ids, attention_mask, token_type_ids ([batch, seq], int64) and gives
last_hidden_state; pooling and normalization are done by the benchmark, as by
sentence-transformers. The file is git-ignored with the rest of the model folder.
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    import torch
    from transformers import AutoModel
    model_dir = sys.argv[1] if len(sys.argv) > 1 else "models/all-MiniLM-L6-v2"
    bert = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):  # positional inputs, one output
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    model = Encoder().eval()
    ids = torch.tensor([[101, 7592, 2088, 102]], dtype=torch.int64)
    mask = torch.ones_like(ids)
    out = os.path.join(model_dir, "model.onnx")
    torch.onnx.export(model, (ids, mask, torch.zeros_like(ids)), out,
                      input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["last_hidden_state"],
                      dynamic_axes={n: {0: "batch", 1: "seq"} for n in
                                    ["input_ids", "attention_mask", "token_type_ids",
                                     "last_hidden_state"]},
                      opset_version=17, dynamo=False)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
