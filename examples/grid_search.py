"""DLwJS ch. 3: grid search over units and learning rate, keeping the best validation loss."""
import deepgpu as dg
from deepgpu.layers import Dense
from deepgpu.tuning import grid_search

from _common import budget

dg.set_seed(0)
x = dg.random_normal((budget(1000, 200), 5)).data_sync()
y = (x[:, :1] * 2 - x[:, 1:2] + 0.5 * x[:, 2:3] ** 2).astype("float32")


def build(units, learning_rate):
    model = dg.Sequential([Dense(units, activation="relu", input_shape=(5,)), Dense(1)])
    model.compile(optimizer=dg.optimizers.Adam(learning_rate), loss="mse")
    return model


result = grid_search(build, {"units": budget([10, 20, 50, 100, 200], [10, 50]),
                             "learning_rate": budget([1e-5, 1e-4, 1e-3, 1e-2], [1e-4, 1e-2])},
                     x, y, epochs=budget(20, 2), seed=0)
for trial in result.trials:
    print(trial["params"], f"val_loss {trial['val_loss']:.4f}")
print("best:", result.best_params, f"val_loss {result.best_val_loss:.4f}")
