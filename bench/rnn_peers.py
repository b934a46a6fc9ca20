"""Recurrent text classifiers: deepgpu beside PyTorch and Keras on the CPU, one run, peers alternated.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 bench/rnn_peers.py [--nets lstm,gru,bilstm]
        [--rounds 5] [--steps 3] [--threads 2] [--frameworks deepgpu,torch,keras] [--out FILE.json]

For issue 16: Embedding(20000, 128) + LSTM(128) + Dense(2, softmax), sequences of 200 token
ids, batch 64, sparse categorical cross-entropy, Adam(1e-3): the time of one training step
after warm-up. ``gru``: the same with GRU(128) (reset_after=True, Keras's default and
PyTorch's form); ``bilstm``: two stacked Bidirectional(LSTM(128)) layers (the first returning
sequences; concat merge) before the Dense.

Each framework runs in its own worker process (its own thread pools), started once; the
parent then alternates them round by round (the starting worker rotated each round), so
that other work on a shared machine hits all of them alike, and reports per net and
framework the median over rounds of the per-step time (each round: ``--steps`` steps).
  deepgpu  Sequential + ``compile`` + ``train_on_batch`` (the fused C cell each step)
  torch    nn.Embedding + nn.LSTM / nn.GRU (batch_first; 2 layers, bidirectional for bilstm),
           the last layer's final hidden state(s) -> nn.Linear; zero_grad, forward, loss,
           backward, Adam step, ``loss.item()``
  keras    Keras 3 on TensorFlow, the deepgpu model's twin, ``train_on_batch``
Threads: ``--threads`` for the BLAS (``OPENBLAS/OMP/MKL_NUM_THREADS``), ``DEEPGPU_NUM_THREADS``,
``torch.set_num_threads``, TensorFlow's intra-op pool (inter-op 1). ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` are removed from the workers' environment. A peer that is not installed
is skipped with a line saying so.
"""
from __future__ import annotations

import os

import peer_runner  # bench/, beside this script

VOCAB, EMBED, UNITS, SEQ, BATCH, CLASSES = 20000, 128, 128, 200, 64, 2


def _data():
    import numpy as np
    rng = np.random.default_rng(16)
    return (rng.integers(1, VOCAB, (BATCH, SEQ)).astype("int32"), rng.integers(0, CLASSES, BATCH).astype("int32"))


# ------------------------------------------------------------------ workers
def _deepgpu_model(net):
    """The deepgpu network of ``net``, not compiled (bench/seq_gpu.py builds it on the GPU)."""
    import deepgpu as dg
    from deepgpu import layers as L

    rnn = {"lstm": lambda: [L.LSTM(UNITS)], "gru": lambda: [L.GRU(UNITS)],
           "bilstm": lambda: [L.Bidirectional(L.LSTM(UNITS, return_sequences=True)),
                              L.Bidirectional(L.LSTM(UNITS))]}[net]()
    return dg.Sequential([L.Input((SEQ,), dtype="int32"), L.Embedding(VOCAB, EMBED), *rnn,
                          L.Dense(CLASSES, activation="softmax")])


def _deepgpu(net):
    import deepgpu as dg
    from deepgpu import optimizers

    dg.set_seed(0)
    model = _deepgpu_model(net)
    model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y = _data()
    return lambda: model.train_on_batch(x, y), model.count_params()


def _torch(net, threads):
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, EMBED)
            kind = nn.GRU if net == "gru" else nn.LSTM
            bi = net == "bilstm"
            self.rnn = kind(EMBED, UNITS, num_layers=2 if bi else 1, bidirectional=bi, batch_first=True)
            self.out = nn.Linear(UNITS * (2 if bi else 1), CLASSES)

        def forward(self, x):
            _, state = self.rnn(self.embed(x))
            h = state[0] if isinstance(state, tuple) else state  # [layers * directions, N, units]
            h = torch.cat([h[-2], h[-1]], 1) if net == "bilstm" else h[-1]
            return self.out(h)

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
    rnn = {"lstm": lambda: [L.LSTM(UNITS)], "gru": lambda: [L.GRU(UNITS)],
           "bilstm": lambda: [L.Bidirectional(L.LSTM(UNITS, return_sequences=True)),
                              L.Bidirectional(L.LSTM(UNITS))]}[net]()
    model = keras.Sequential([keras.Input((SEQ,), dtype="int32"), L.Embedding(VOCAB, EMBED), *rnn,
                              L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y = _data()
    return lambda: model.train_on_batch(x, y), model.count_params()


def _makers():
    return {"deepgpu": lambda net, threads: _deepgpu(net), "torch": _torch, "keras": _keras}


if __name__ == "__main__":
    peer_runner.main(__doc__, __file__, "lstm,gru,bilstm", _makers())
