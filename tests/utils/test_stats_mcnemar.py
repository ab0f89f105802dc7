"""McNemar's test against hand-computed exact binomial and continuity-corrected χ² values."""

from __future__ import annotations

import math

import pytest

from medmnist_lit.utils.stats import mcnemar


def _pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return a, b


def test_exact_p_is_the_two_sided_binomial_of_the_discordant_pairs() -> None:
    # 1 vs 6 discordant: P = 2 * (C(7,0) + C(7,1)) / 2^7 = 16/128
    result = mcnemar(*_pairs(40, 1, 6, 3))
    assert (result["n"], result["a_only"], result["b_only"]) == (50, 1, 6)
    assert result["p"] == pytest.approx(16 / 128)
    # 0 vs 5: 2 / 2^5, whichever model is A
    assert mcnemar(*_pairs(10, 0, 5, 0))["p"] == pytest.approx(2 / 32)
    assert mcnemar(*_pairs(10, 5, 0, 0))["p"] == pytest.approx(2 / 32)


def test_chi2_has_the_continuity_correction() -> None:
    # (|10 - 25| - 1)^2 / 35 = 5.6; the χ² survival function with 1 df is erfc(sqrt(x / 2))
    result = mcnemar(*_pairs(100, 10, 25, 5))
    assert result["chi2"] == pytest.approx(5.6)
    assert result["p_chi2"] == pytest.approx(math.erfc(math.sqrt(2.8)))
    # exact: 2 * sum_{k<=10} C(35, k) / 2^35
    assert result["p"] == pytest.approx(2 * sum(math.comb(35, k) for k in range(11)) / 2**35)


def test_no_discordant_pair_means_no_evidence_and_bad_input_is_named() -> None:
    assert mcnemar(*_pairs(7, 0, 0, 3)) == {"n": 10, "a_only": 0, "b_only": 0, "p": 1.0, "chi2": 0.0, "p_chi2": 1.0}
    with pytest.raises(ValueError, match="equally long"):
        mcnemar([True, False], [True])
