import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

BACKEND = keras.backend.backend()


def pytest_collection_modifyitems(config, items):
    # TFLite, XLA and tf.data checks belong to the TensorFlow run; the
    # second-backend run (torch or jax) takes every other test.
    if BACKEND == "tensorflow":
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("tf_only") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


_TESTS_PER_COLLECTION = 20
_finished = [0]


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
    # A full garbage collection after every test costs a large share of the
    # suite's time (TensorFlow graphs hold many cyclic objects); collecting
    # every few tests keeps memory flat at a fraction of the cost.
    keras.backend.clear_session(free_memory=False)
    _finished[0] += 1
    if _finished[0] % _TESTS_PER_COLLECTION == 0:
        gc.collect()
