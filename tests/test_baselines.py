"""Wake-sleep and Monte Carlo EM (baselines/) on a linear-Gaussian model whose likelihood is exact.

p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I)  =>  p(x) = N(b, W W^T + s^2 I), and the posterior is
N(m(x), S) with S = (I + W^T W / s^2)^-1, m(x) = S W^T (x - b) / s^2. The decoder is swapped for
a linear one with the interface of vae_core's decoders (as tests/test_linear_gaussian.py does);
the encoder stays the paper's MLP.
"""
import copy
import io
import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

from baselines import MonteCarloEM, WakeSleep
from vae_core import AEVB, ModelConfig, NonFiniteLossError, OptimizerConfig, VariationalAutoEncoder
from vae_core.estimators import average_lower_bound
from vae_core.networks import diagonal_gaussian

X_DIM, Z_DIM, NOISE_STD, N = 4, 2, 0.3, 400
TRUE_WEIGHT = torch.tensor([[1.5, 0.0], [0.5, -1.0], [0.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
TRUE_BIAS = torch.tensor([0.5, -0.5, 1.0, 0.0], dtype=torch.float64)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids spin-waiting on a machine shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LinearGaussianDecoder(nn.Module):
    """p(x|z) = N(W z + b, s^2 I) with learnable W, b and a fixed s; vae_core's decoder interface."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight.clone()), nn.Parameter(bias.clone())

    def forward(self, z):
        mean = self.mean(z)
        return diagonal_gaussian(mean, torch.full_like(mean, 2 * math.log(NOISE_STD)))

    def mean(self, z):
        return z @ self.weight.T + self.bias

    def output_biases(self):
        return [self.bias]


def exact_average_log_likelihood(decoder, x):
    cov = decoder.weight @ decoder.weight.T + NOISE_STD**2 * torch.eye(X_DIM, dtype=x.dtype)
    return MultivariateNormal(decoder.bias, cov).log_prob(x).mean().item()


def exact_posterior(weight, bias, x):
    precision = torch.eye(Z_DIM, dtype=x.dtype) + weight.T @ weight / NOISE_STD**2
    cov = torch.linalg.inv(precision)
    return (x - bias) @ weight @ cov / NOISE_STD**2, cov  # cov is symmetric


def make_data(n=N, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, Z_DIM, dtype=torch.float64, generator=generator)
    noise = torch.randn(n, X_DIM, dtype=torch.float64, generator=generator)
    return z @ TRUE_WEIGHT.T + TRUE_BIAS + NOISE_STD * noise


def make_model(weight=None, bias=None, seed=1):
    """The paper's encoder (16 tanh units) with a linear-Gaussian decoder, by default from a poor
    initialization (W small, b = 0)."""
    torch.manual_seed(seed)
    model = VariationalAutoEncoder(ModelConfig(X_DIM, Z_DIM, 16, "gaussian", init_std=0.1)).double()
    if weight is None:
        weight = 0.1 * torch.randn(X_DIM, Z_DIM, dtype=torch.float64)
    if bias is None:
        bias = torch.zeros(X_DIM, dtype=torch.float64)
    model.decoder = LinearGaussianDecoder(weight, bias)
    return model


# ---------------------------------------------------------------------------- learning
@pytest.mark.parametrize("algorithm_class, steps", [(WakeSleep, 800), (MonteCarloEM, 400)])
def test_baselines_raise_the_exact_log_likelihood(algorithm_class, steps):
    x = make_data()
    model = make_model()
    before = exact_average_log_likelihood(model.decoder, x)
    algorithm = algorithm_class(model, N, OptimizerConfig(0.1, warmup_steps=10))
    torch.manual_seed(2)
    algorithm.train_steps(x, steps, 50)
    after = exact_average_log_likelihood(model.decoder, x)
    optimum = MultivariateNormal(x.mean(0), torch.cov(x.T, correction=0)).log_prob(x).mean().item()
    # before ~ -52, optimum ~ -4.7 nats per datapoint (the best Gaussian, an upper bound for this
    # family); both algorithms end within 0.2 of it here (MCEM's speed depends on the seed).
    assert optimum - before > 20
    assert after > optimum - 0.5, (before, after, optimum)


def test_mcem_leaves_the_encoder_untouched():
    x = make_data(100)
    model = make_model()
    encoder_before = copy.deepcopy(model.encoder.state_dict())
    algorithm = MonteCarloEM(model, 100, OptimizerConfig(0.1, warmup_steps=0), batch_size=20)
    algorithm.train_steps(x, 10, 20)
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert all(p.grad is None for p in model.encoder.parameters())
    assert algorithm.evaluate_lower_bound(x) is None


# ---------------------------------------------------------------------------- wake-sleep
def test_wake_sleep_returns_the_sgvb_bound_of_the_minibatch():
    """With the warm-up not over, no parameter changes, so the returned values are independent
    draws of estimator B (L = 1) on the batch: their mean must match the bound itself."""
    x = make_data(400)
    model = make_model(TRUE_WEIGHT, TRUE_BIAS)
    algorithm = WakeSleep(model, N, OptimizerConfig(0.1, warmup_steps=10_000))
    torch.manual_seed(3)
    values = torch.tensor([algorithm.step(x, None) for _ in range(400)], dtype=torch.float64)
    standard_error = values.std().item() / math.sqrt(len(values))
    reference = average_lower_bound(model, x, L=2000)
    assert abs(values.mean().item() - reference) < 4.5 * standard_error
    # evaluate_lower_bound is estimator B with L = 1 over the same points: one such draw.
    assert abs(algorithm.evaluate_lower_bound(x) - reference) < 4.5 * values.std().item()
    # log p(x, z) at z ~ q (what the wake phase ascends) is another number: it lacks q's entropy
    # (2.84 nats for the initial unit-variance q), so returning it would fail the first check.
    with torch.no_grad():
        log_joint = model.log_joint(x, model.encoder(x).sample((200,))).mean().item()
    assert abs(log_joint - reference) > 8 * standard_error


def test_the_sleep_phase_fits_the_posterior_of_dreamed_data():
    """Sleep minimizes KL(p(z|x) || q(z|x)) over dreams (z, x) ~ p: a diagonal q then matches the
    exact posterior mean and marginal variances. Training on the decoder's mean instead of a
    sample would make z a deterministic function of x (variance -> 0) and fail this."""
    model = make_model(TRUE_WEIGHT, TRUE_BIAS)
    algorithm = WakeSleep(model, 10_000, OptimizerConfig(0.05, warmup_steps=0))
    torch.manual_seed(4)
    for _ in range(1500):
        algorithm.sleep(100)
    x = make_data(500, seed=5)
    mean, cov = exact_posterior(TRUE_WEIGHT, TRUE_BIAS, x)
    with torch.no_grad():
        q_mean, q_log_var = model.encoder.mean_and_log_var(x)
    posterior_std = cov.diagonal().sqrt()
    assert ((q_mean - mean) / posterior_std).pow(2).mean().sqrt() < 0.4
    assert (q_log_var.mean(0) - cov.diagonal().log()).abs().max() < 0.3, (q_log_var.mean(0), cov.diagonal())


def test_wake_sleep_stops_on_a_non_finite_bound_without_updating():
    model = make_model()
    algorithm = WakeSleep(model, N, OptimizerConfig(0.1, warmup_steps=0))
    before = copy.deepcopy(model.state_dict())
    x = make_data(20)
    x[3, 1] = math.nan
    with pytest.raises(NonFiniteLossError):
        algorithm.step(x, None)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# ---------------------------------------------------------------------------- MCEM
def test_mcem_samples_the_exact_posterior_of_each_datapoint():
    """With the decoder fixed at the truth (no M-step), every persistent chain must be distributed
    as p(z|x_i): whitened residuals (z_i - m(x_i)) S^-1/2 across datapoints are N(0, I). This
    fails if a chain were paired with the wrong datapoint or the HMC target were wrong."""
    n = 500
    x = make_data(n, seed=6)
    algorithm = MonteCarloEM(make_model(TRUE_WEIGHT, TRUE_BIAS), n, OptimizerConfig(0.1), updates_per_batch=0,
                             batch_size=100)
    torch.manual_seed(7)
    algorithm.train_steps(x, 300, 100)  # ~60 visits per chain: tuned and mixed
    mean, cov = exact_posterior(TRUE_WEIGHT, TRUE_BIAS, x)
    whitening = torch.linalg.cholesky(torch.linalg.inv(cov))
    residuals = []
    for _ in range(5):  # a few snapshots one epoch apart, averaged
        algorithm.train_steps(x, 5, 100)
        residuals.append((algorithm.chains - mean) @ whitening)
    residuals = torch.cat(residuals)
    # Snapshots of one chain are correlated, so judge with the error of a single snapshot (n points).
    assert residuals.mean(0).abs().max() < 4.5 / math.sqrt(n), residuals.mean(0)
    second = residuals.T @ residuals / residuals.shape[0]
    torch.testing.assert_close(second, torch.eye(Z_DIM, dtype=torch.float64), rtol=0, atol=4 * math.sqrt(2 / n))


def test_mcem_moves_only_the_minibatch_chains_and_reaches_the_target_acceptance():
    x = make_data()
    algorithm = MonteCarloEM(make_model(), N, OptimizerConfig(0.1, warmup_steps=10), batch_size=50)
    chains, steps = algorithm.chains.clone(), algorithm.step_sizes.clone()
    indices = torch.cat([torch.arange(10, 58), torch.tensor([20, 20])])  # with a repeated datapoint
    algorithm.step(x[indices], indices)
    moved = (algorithm.chains != chains).any(-1)
    retuned = algorithm.step_sizes != steps
    outside = torch.ones(N, dtype=torch.bool)
    outside[10:58] = False
    assert not moved[outside].any() and not retuned[outside].any()
    assert moved[10:58].float().mean() > 0.5 and retuned[10:58].all()
    assert algorithm.visits[20] == 1 and algorithm.visits[outside].sum() == 0  # one write per chain

    torch.manual_seed(3)
    algorithm.train_steps(x, 300, 50)  # every chain visited ~40 times: its step size has adapted
    algorithm.accepted_total, algorithm.proposals_total = 0.0, 0
    algorithm.train_steps(x, 100, 50)
    assert abs(algorithm.acceptance_rate - 0.9) < 0.04, algorithm.acceptance_rate
    metrics = algorithm.extra_metrics()
    assert set(metrics) == {"hmc_acceptance_rate", "hmc_recent_acceptance_rate", "hmc_median_step_size"}
    assert all(math.isfinite(v) for v in metrics.values())


def test_mcem_starts_a_new_chain_from_the_population_step_size():
    x = make_data()
    algorithm = MonteCarloEM(make_model(TRUE_WEIGHT, TRUE_BIAS), N, OptimizerConfig(0.1), updates_per_batch=0,
                             initial_step_size=1.0, batch_size=50)
    torch.manual_seed(8)
    for _ in range(60):  # only the first 100 datapoints
        indices = torch.randint(100, (50,))
        algorithm.step(x[indices], indices)
    visited = algorithm.step_sizes[:100].log()
    assert visited.max() < math.log(0.5)  # tuned far below the initial 1.0 (posterior std ~0.15)
    assert abs(algorithm.population_log_step - visited.mean().item()) < 0.3
    population = math.exp(algorithm.population_log_step)
    new = torch.arange(200, 250)
    assert (algorithm.step_sizes[new] == 1.0).all() and (algorithm.visits[new] == 0).all()
    algorithm.step(x[new], new)
    ratio = algorithm.step_sizes[new] / population  # one adaptation away from the population's
    assert (ratio <= 1.25 + 1e-9).all() and (ratio >= math.exp(-algorithm.adaptation.gain * 0.9) - 1e-9).all()


def test_mcem_needs_the_batch_indices_and_stops_on_non_finite_data():
    x = make_data(30)
    model = make_model()
    algorithm = MonteCarloEM(model, 30, OptimizerConfig(0.1, warmup_steps=0), batch_size=10)
    assert algorithm.extra_metrics() == {}
    with pytest.raises(ValueError):
        algorithm.step(x[:10], None)
    with pytest.raises(ValueError):
        algorithm.step(x[:10], torch.arange(9))
    before = copy.deepcopy(model.state_dict())
    x[2, 0] = math.nan
    with pytest.raises(NonFiniteLossError):
        algorithm.step(x[:10], torch.arange(10))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


# ---------------------------------------------------------------------------- checkpoints
def build(algorithm_class, seed):
    torch.manual_seed(seed)
    model = VariationalAutoEncoder(ModelConfig(12, 2, 8, "bernoulli"))
    optimizer = OptimizerConfig(0.05, warmup_steps=3)
    if algorithm_class is MonteCarloEM:
        return MonteCarloEM(model, 300, optimizer, batch_size=20)
    return algorithm_class(model, 300, optimizer)


@pytest.mark.parametrize("algorithm_class", [AEVB, WakeSleep, MonteCarloEM])
def test_state_dict_round_trip_continues_identically(algorithm_class):
    """Train k steps, checkpoint (through torch.save, as the pipeline does), keep going; a fresh
    instance loaded from the checkpoint with the same RNG state must end up bit-identical."""
    x = torch.rand(300, 12, generator=torch.Generator().manual_seed(0))
    original = build(algorithm_class, 0)
    torch.manual_seed(5)
    original.train_steps(x, 15, 20)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    rng = torch.get_rng_state()
    original.train_steps(x, 15, 20)

    resumed = build(algorithm_class, 9)  # a different initialization, overwritten by the load
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    torch.set_rng_state(rng)
    resumed.train_steps(x, 15, 20)
    for (name, a), b in zip(original.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    if algorithm_class is MonteCarloEM:
        assert torch.equal(original.chains, resumed.chains)
        assert torch.equal(original.step_sizes, resumed.step_sizes)
        assert original.acceptance_rate == resumed.acceptance_rate
