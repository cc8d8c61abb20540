"""The variant layers that the layer tests (on the CPU) and the CUDA tests build: together they
set every variant option of RNN, LSTM and GRU. Each entry takes (input_size, hidden_size,
**layer_arguments)."""

from __future__ import annotations

import rnnkit

VARIANT_LAYERS = {
    "lstm_layer_norm_peephole": lambda i, h, **kw: rnnkit.LSTM(
        i, h, layer_norm=True, peephole=True, **kw
    ),
    "lstm_zoneout_proj": lambda i, h, **kw: rnnkit.LSTM(
        i, h, proj_size=h // 2, zoneout=0.2, zoneout_cell=0.4, **kw
    ),
    "lstm_dropouts": lambda i, h, **kw: rnnkit.LSTM(
        i, h, recurrent_dropout=0.3, weight_drop=0.3, **kw
    ),
    "gru_layer_norm_zoneout": lambda i, h, **kw: rnnkit.GRU(
        i, h, layer_norm=True, zoneout=0.2, **kw
    ),
    "gru_proj_dropouts": lambda i, h, **kw: rnnkit.GRU(
        i, h, proj_size=h - 1, recurrent_dropout=0.3, weight_drop=0.3, **kw
    ),
    "rnn_proj_zoneout": lambda i, h, **kw: rnnkit.RNN(i, h, proj_size=h // 2, zoneout=0.3, **kw),
}
