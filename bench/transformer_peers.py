"""A 2-block Transformer encoder classifier: deepgpu beside PyTorch and Keras on the CPU, one run, peers alternated.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/transformer_peers.py
        [--rounds 5] [--steps 3] [--threads 2] [--frameworks deepgpu,torch,keras] [--out FILE.json]

For issue 18: Embedding(20000, 128) + 2 x [MultiHeadAttention(4 heads, key_dim 32, dropout 0.1),
Dropout(0.1), Add, LayerNormalization(1e-6), Dense(256, relu), Dense(128), Dropout(0.1), Add,
LayerNormalization(1e-6)] + GlobalAveragePooling1D + Dense(2, softmax) (Keras's "text
classification with Transformer" recipe, without its position embedding), sequences of 200
token ids, batch 32, sparse categorical cross-entropy, Adam(1e-3): the time of one training step
after warm-up, and each worker's peak resident memory (ru_maxrss) at the end.

Each framework runs in its own worker process, started once; the parent alternates them round
by round (the starting worker rotated each round) and reports the median over rounds of the
per-step time (each round: ``--steps`` steps).
  deepgpu  functional Model + ``compile`` + ``train_on_batch``
  torch    nn.Embedding + nn.MultiheadAttention (batch_first) + nn.LayerNorm + nn.Linear, the same
           graph; zero_grad, forward, loss, backward, Adam step, ``loss.item()``
  keras    Keras 3 on TensorFlow, the deepgpu model's twin, ``train_on_batch``
Threads: ``--threads`` for the BLAS, ``DEEPGPU_NUM_THREADS``, ``torch.set_num_threads``,
TensorFlow's intra-op pool (inter-op 1). ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` are removed
from the workers' environment. A peer that is not installed is skipped with a line saying so.
"""
from __future__ import annotations

import os

import peer_runner  # bench/, beside this script

VOCAB, EMBED, HEADS, FF, SEQ, BATCH, CLASSES, BLOCKS = 20000, 128, 4, 256, 200, 32, 2, 2


def _data():
    import numpy as np
    rng = np.random.default_rng(18)
    return (rng.integers(1, VOCAB, (BATCH, SEQ)).astype("int32"), rng.integers(0, CLASSES, BATCH).astype("int32"))


def _build(L, Input, Model):
    """The network in Keras's functional API (deepgpu's and Keras's are the same calls)."""
    inp = Input((SEQ,), dtype="int32")
    x = L.Embedding(VOCAB, EMBED)(inp)
    for _ in range(BLOCKS):
        a = L.MultiHeadAttention(num_heads=HEADS, key_dim=EMBED // HEADS, dropout=0.1)(x, x)
        x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, L.Dropout(0.1)(a)]))
        f = L.Dense(EMBED)(L.Dense(FF, activation="relu")(x))
        x = L.LayerNormalization(epsilon=1e-6)(L.Add()([x, L.Dropout(0.1)(f)]))
    out = L.Dense(CLASSES, activation="softmax")(L.GlobalAveragePooling1D()(x))
    return Model(inp, out)


# ------------------------------------------------------------------ workers
def _deepgpu(net):
    import deepgpu as dg
    from deepgpu import layers as L, optimizers
    from deepgpu.models import Model

    dg.set_seed(0)
    model = _build(L, L.Input, Model)
    model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y = _data()
    return lambda: model.train_on_batch(x, y), model.count_params()


def _torch(net, threads):
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.att = nn.MultiheadAttention(EMBED, HEADS, dropout=0.1, batch_first=True)
            self.n1, self.n2 = nn.LayerNorm(EMBED, eps=1e-6), nn.LayerNorm(EMBED, eps=1e-6)
            self.ff = nn.Sequential(nn.Linear(EMBED, FF), nn.ReLU(), nn.Linear(FF, EMBED))
            self.d1, self.d2 = nn.Dropout(0.1), nn.Dropout(0.1)

        def forward(self, x):
            a, _ = self.att(x, x, x, need_weights=False)
            x = self.n1(x + self.d1(a))
            return self.n2(x + self.d2(self.ff(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, EMBED)
            self.blocks = nn.Sequential(*[Block() for _ in range(BLOCKS)])
            self.out = nn.Linear(EMBED, CLASSES)

        def forward(self, x):
            return self.out(self.blocks(self.embed(x)).mean(1))

    model = Net()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x, y = (torch.as_tensor(a).long() for a in _data())

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()
    return step, sum(p.numel() for p in model.parameters())


def _keras(net, threads):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    model = _build(L, keras.Input, keras.Model)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y = _data()
    return lambda: model.train_on_batch(x, y), model.count_params()


def _makers():
    return {"deepgpu": lambda net, threads: _deepgpu(net), "torch": _torch, "keras": _keras}


if __name__ == "__main__":
    peer_runner.main(__doc__, __file__, "transformer", _makers())
