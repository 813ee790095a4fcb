"""`reference_compat`: each switch reproduces the reference formula where our spec differs.

verl-method.md marks three differences: short responses (ours: no ERV/ERA; reference: 0),
the baselines' start (ours: bias-corrected EMA; reference: 0, uncorrected) and the bonus
placement (ours: every response token; reference: the last one).
"""

import math

import pytest
import spec_reference as ref
import torch

from shaping import (
    Baselines,
    IndicatorStats,
    ReferenceCompatConfig,
    ShapingConfig,
    aux_signal,
    compute_indicators,
    rank_dynamics,
    rank_dynamics_batch,
    shaping_bonus,
    token_advantages,
)

pytestmark = pytest.mark.unit


def short_and_long_batch():
    rows = [ref.gaussian(60, 16, 1), ref.gaussian(6, 16, 2)]  # stride 4: 14 checkpoints vs 1
    return rows, *ref.padded_batch(rows)


def test_reference_settings():
    cfg = ShapingConfig.reference()
    assert (cfg.stride, cfg.window, cfg.alpha, cfg.gamma, cfg.kappa, cfg.lam) == (40, 512, 0.3, 2.0, 2.0, 1.0)
    assert cfg.compat == ReferenceCompatConfig(zero_short_dynamics=True, zero_start_baselines=True,
                                               last_token_bonus=True)
    assert ShapingConfig.reference(stride=4).stride == 4
    assert ShapingConfig().compat == ReferenceCompatConfig()  # ours by default: every switch off


def test_short_responses_get_zero_dynamics_in_reference_mode_and_none_in_ours():
    rows, z, mask = short_and_long_batch()
    ours = compute_indicators(z, mask, ShapingConfig(stride=4))
    theirs = compute_indicators(z, mask, ShapingConfig.reference(stride=4))
    assert math.isnan(ours.erv[1]) and math.isnan(ours.era[1])
    assert float(theirs.erv[1]) == 0.0 and float(theirs.era[1]) == 0.0
    # long responses are unaffected by the switch
    assert float(theirs.erv[0]) == float(ours.erv[0]) and float(theirs.era[0]) == float(ours.era[0])
    assert rank_dynamics(rows[1], stride=4, zero_short=True) == (0.0, 0.0)
    assert rank_dynamics(rows[1], stride=4) is None
    # a batch where nobody reaches two velocities
    erv, era = rank_dynamics_batch(z[1:, :6], mask[1:, :6], stride=4, zero_short=True)
    assert erv.tolist() == [0.0] and era.tolist() == [0.0]


def test_zero_dynamics_count_in_the_reference_baselines_but_missing_ones_do_not():
    _, z, mask = short_and_long_batch()
    scores = torch.tensor([1.0, 0.0], dtype=torch.float64)
    ours = IndicatorStats.from_batch(compute_indicators(z, mask, ShapingConfig(stride=4)), scores)
    theirs = IndicatorStats.from_batch(compute_indicators(z, mask, ShapingConfig.reference(stride=4)), scores)
    assert ours.moments["erv"].count == 1 and theirs.moments["erv"].count == 2
    assert theirs.means()["erv"] == pytest.approx(ours.means()["erv"] / 2)


def test_reference_baselines_start_at_zero_and_make_early_deviations_saturate():
    cfg = ShapingConfig.reference(stride=4)
    _, z, mask = short_and_long_batch()
    ind = compute_indicators(z, mask, cfg)
    aux = aux_signal(ind, Baselines.initial(cfg), cfg)
    # m_ER = 0: d_ER = ER / 1e-8 clipped to 5 for every response (ER >= 1)
    assert aux.deviations[:, 2].tolist() == [5.0, 5.0]
    # ours gives no signal at all before the first batch
    ours = aux_signal(ind, Baselines.initial(ShapingConfig(stride=4)), ShapingConfig(stride=4))
    assert torch.equal(ours.r_aux, torch.zeros(2, dtype=torch.float64))


def test_reference_bonus_sits_on_the_last_token_only():
    cfg = ShapingConfig.reference()
    a0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    bonus = shaping_bonus(a0, torch.tensor([2.0, 0.1], dtype=torch.float64), cfg.kappa)
    assert bonus.tolist() == pytest.approx([0.5, 0.1])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    theirs = token_advantages(a0, bonus, mask, last_token=cfg.compat.last_token_bonus)
    ours = token_advantages(a0, bonus, mask, last_token=ShapingConfig().compat.last_token_bonus)
    expected_theirs = torch.tensor([[1.0, 1.0, 1.5, 0.0], [-0.5, -0.5, -0.5, -0.4]], dtype=torch.float64)
    expected_ours = torch.tensor([[1.5, 1.5, 1.5, 0.0], [-0.4, -0.4, -0.4, -0.4]], dtype=torch.float64)
    torch.testing.assert_close(theirs, expected_theirs)
    torch.testing.assert_close(ours, expected_ours)
