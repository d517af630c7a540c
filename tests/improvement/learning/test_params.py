"""improvement.learning.params: adjuster parameters from the settings, and Embedding Studio's defaults."""

from __future__ import annotations

from improvement.learning.params import AdjusterParams


def test_params_from_settings(settings):
    settings.IMPROVEMENT_LR = 0.02
    settings.IMPROVEMENT_ITERATIONS = 7
    settings.IMPROVEMENT_MAX_DRIFT = 0.0  # 0 switches the cap off
    settings.STUDIO_METRIC = "dot"
    settings.IMPROVEMENT_TORCH_THREADS = 1
    params = AdjusterParams.from_settings(seed=3)
    assert (params.lr, params.iterations, params.max_drift, params.metric, params.seed) == (0.02, 7, None, "dot", 3)
    assert params.num_threads == 1
    studio_default = AdjusterParams.embedding_studio()
    assert (studio_default.lr, studio_default.iterations, studio_default.max_drift, studio_default.renormalize) == (
        0.1,
        10,
        None,
        False,
    )
