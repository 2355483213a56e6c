"""The fused, stacked AEVB update (vae_core.fused_aevb) is the autograd update, run alone or stacked."""
import copy
import math

import pytest
import torch

from vae_core import AEVB, ModelConfig, OptimizerConfig, VariationalAutoEncoder
from vae_core.estimators import kl_diagonal_gaussian_to_standard_normal
from vae_core.fused_aevb import StackedAEVB, _layers
from vae_core.training import (
    generator_like_global,
    select_step_size,
    train_stacked_steps,
)

DECODERS = [("bernoulli", 784), ("gaussian", 560)]


def model_of(decoder, x_dim, z_dim=4, hidden=32, init_std=0.3):
    return VariationalAutoEncoder(ModelConfig(x_dim, z_dim, hidden, decoder, init_std))


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("decoder,x_dim", DECODERS)
def test_hand_derived_gradient_equals_autograd_of_estimator_b(decoder, x_dim, dtype, tolerance):
    """Against autograd in float64: to float32 rounding, and in float64 to 1e-12 of each
    gradient's scale (it agrees to about 1e-15)."""
    torch.manual_seed(0)
    models = [model_of(decoder, x_dim).to(dtype) for _ in range(2)]
    references = [copy.deepcopy(m).double() for m in models]
    engine = StackedAEVB(models, [100, 1000], [OptimizerConfig(0.1), OptimizerConfig(0.02)])
    x = torch.rand(2, 17, x_dim, dtype=dtype)
    eps = torch.randn(2, 17, 4, dtype=dtype)
    bound = engine.forward_backward(x, eps)
    for r, reference in enumerate(references):
        mean, log_var = reference.encoder.mean_and_log_var(x[r].double())
        z = mean + torch.exp(0.5 * log_var) * eps[r].double()  # the same eps (Section 2.4)
        expected = (reference.decoder(z).log_prob(x[r].double())
                    - kl_diagonal_gaussian_to_standard_normal(mean, log_var)).mean()
        (-expected).backward()
        assert float(bound[r]) == pytest.approx(float(expected.detach()), rel=tolerance / 10)
        for position, layer in enumerate(_layers(reference)):
            for ours, theirs in ((engine.weight_grads[position][r], layer.weight.grad),
                                 (engine.bias_grads[position][r], layer.bias.grad)):
                scale = float(theirs.abs().max())
                assert float((ours.double() - theirs).abs().max()) <= tolerance * scale


@pytest.mark.parametrize("decoder,x_dim", DECODERS)
def test_fused_path_trains_like_the_autograd_path(decoder, x_dim):
    """Same seed, same minibatches and eps: the fused update follows autograd's trajectory.

    In float64: Adagrad divides each gradient by its own root-sum-of-squares, so where a
    gradient is near zero float32 rounding alone can flip an early update's sign. Even in float64
    the two paths round differently (the fused one computes tanh as 2 sigmoid(2a) - 1 and orders
    its sums differently; its gradient agrees with autograd's to 1e-15, see the test above), and
    Adagrad amplifies that over 60 updates to about 1e-6 of a parameter's scale; a wrong formula
    would differ at the scale itself."""
    x_train = torch.rand(300, x_dim, dtype=torch.float64)
    finals = []
    for fused in (True, False):
        torch.manual_seed(3)
        algorithm = AEVB(model_of(decoder, x_dim, init_std=0.01).double(), 300,
                         OptimizerConfig(0.05, warmup_steps=5), fused=fused)
        assert algorithm.fused is fused
        algorithm.train_steps(x_train, 60, 20)
        finals.append({k: v.clone() for k, v in algorithm.model.state_dict().items()})
    for key in finals[0]:
        difference = float((finals[0][key] - finals[1][key]).abs().max())
        assert difference <= 1e-5 * float(finals[1][key].abs().max()), (key, difference)


def test_fused_path_is_used_only_for_estimator_b_with_one_sample():
    model = model_of("bernoulli", 784)
    assert AEVB(model, 100, OptimizerConfig(0.1)).fused
    assert not AEVB(model_of("bernoulli", 784), 100, OptimizerConfig(0.1), estimator="A").fused
    assert not AEVB(model_of("bernoulli", 784), 100, OptimizerConfig(0.1), samples_per_datapoint=2).fused
    with pytest.raises(ValueError, match="estimator B with L = 1"):
        AEVB(model_of("bernoulli", 784), 100, OptimizerConfig(0.1), estimator="A", fused=True)


@pytest.mark.parametrize("dtype,batch_size,tolerance", [(torch.float32, 32, 0.0), (torch.float64, 25, 1e-5)])
@pytest.mark.parametrize("decoder,x_dim", DECODERS)
def test_a_stacked_run_gives_the_numbers_of_the_same_run_alone(decoder, x_dim, dtype, batch_size, tolerance):
    """Three runs (other seeds, training sets and step sizes) stacked = each run trained alone.

    Same random numbers, same operations, so in float32 with M = 32 the stacked runs end
    bit-for-bit where the runs trained alone end (every parameter, every Adagrad sum, the
    bound): ``tolerance`` 0. The one thing stacking can change is where a run's elements fall
    in the stacked tensors, which decides whether torch computes exp/sigmoid on them with its
    vectorized kernel or its scalar tail loop (they round differently in the last bit); with
    M = 32 every buffer (M x Nz, M x 2 Nz, M x hidden, M x D) is a whole number of 16-float
    vectors, so no run's elements fall in a tail. With a ragged M = 25 they do, and Adagrad
    (which divides each gradient by its own root-sum-of-squares) amplifies the last-bit
    differences: in float64 they stay below 1e-5 of each parameter's scale after 40 updates (up to
    8e-7 measured; a wrong stacking, e.g. a run reading another run's minibatch, differs at the
    scale itself)."""
    data = torch.rand(500, x_dim, dtype=dtype, generator=torch.Generator().manual_seed(5))
    runs = [(11, 500, 0.02), (12, 200, 0.1), (13, 50, 0.01)]  # seed, Ntrain, step size
    alone = []
    for seed, n_train, step_size in runs:
        torch.manual_seed(seed)
        algorithm = AEVB(model_of(decoder, x_dim, init_std=0.01).to(dtype), n_train,
                         OptimizerConfig(step_size, warmup_steps=4))
        bound = algorithm.train_steps(data[:n_train], 40, batch_size)
        alone.append((algorithm.model.state_dict(), algorithm.engine.state_dict(0), bound))

    models, generators = [], []
    for seed, _, _ in runs:
        torch.manual_seed(seed)
        models.append(model_of(decoder, x_dim, init_std=0.01).to(dtype))
        generators.append(generator_like_global(torch.device("cpu")))
    torch.manual_seed(999)  # the global generator plays no part in a stacked run
    engine = StackedAEVB(models, [n for _, n, _ in runs], [OptimizerConfig(s, warmup_steps=4) for _, _, s in runs])
    bounds = train_stacked_steps(engine, [data[:n] for _, n, _ in runs], generators, 40, batch_size)

    for r, (state, adagrad, bound) in enumerate(alone):
        assert float(bounds[r]) == pytest.approx(bound, rel=tolerance / 100, abs=0.0)
        pairs = [(f"model {key}", models[r].state_dict()[key], state[key]) for key in state]
        stacked_adagrad = engine.state_dict(r)
        pairs += [(f"Adagrad {group} {i}", ours, theirs) for group in ("weight_sums", "bias_sums")
                  for i, (ours, theirs) in enumerate(zip(stacked_adagrad[group], adagrad[group]))]
        for name, stacked, trained_alone in pairs:
            difference = float((stacked - trained_alone).abs().max())
            assert difference <= tolerance * float(trained_alone.abs().max()), (r, name, difference)
    # and the runs did differ from one another, so the comparison means something
    assert not torch.allclose(models[0].state_dict()["decoder.hidden.weight"],
                              models[1].state_dict()["decoder.hidden.weight"])


def test_the_stacked_step_size_trial_scores_like_candidates_trained_one_by_one():
    data = torch.rand(400, 784)
    x_eval = data[:100]

    def build(step_size, fused=None):
        return AEVB(model_of("bernoulli", 784, init_std=0.01), 400,
                    OptimizerConfig(step_size, warmup_steps=3), fused=fused)

    best, scores = select_step_size(build, [0.01, 0.02, 0.1], data, x_eval, 30, 20, seed=5)
    one_by_one = {}
    for step_size in (0.01, 0.02, 0.1):
        torch.manual_seed(5)
        algorithm = build(step_size)
        algorithm.train_steps(data, 30, 20)
        one_by_one[step_size] = algorithm.trial_score(x_eval)
    assert scores.keys() == one_by_one.keys()
    for step_size in scores:
        assert scores[step_size] == pytest.approx(one_by_one[step_size], abs=1e-3)
    assert best == max(one_by_one, key=one_by_one.get)


def test_a_diverging_stacked_run_is_frozen_and_the_others_go_on():
    data = torch.rand(200, 784)
    models, generators = [], []
    for _ in range(2):
        torch.manual_seed(1)
        models.append(model_of("bernoulli", 784, init_std=0.01))
        generators.append(generator_like_global(torch.device("cpu")))
    engine = StackedAEVB(models, [200, 200], [OptimizerConfig(0.05, warmup_steps=0)] * 2)
    with torch.no_grad():
        engine.weights[0][1].fill_(math.nan)  # run 1's encoder is broken
    with pytest.raises(Exception, match="stacked run 1"):
        train_stacked_steps(engine, [data, data], generators, 2, 20)
    before = models[0].state_dict()["decoder.output.weight"].clone()
    bounds = train_stacked_steps(engine, [data, data], generators, 5, 20, on_nonfinite="freeze")
    assert engine.active == [True, False]
    assert math.isfinite(float(bounds[0])) and not math.isfinite(float(bounds[1]))
    assert not torch.equal(models[0].state_dict()["decoder.output.weight"], before)


def test_models_stay_views_of_the_stack_through_checkpoints():
    torch.manual_seed(0)
    model = model_of("bernoulli", 784)
    algorithm = AEVB(model, 100, OptimizerConfig(0.1, warmup_steps=0))
    state = copy.deepcopy(algorithm.state_dict())
    algorithm.train_steps(torch.rand(100, 784), 3, 10)
    algorithm.load_state_dict(state)  # back to the start
    assert torch.equal(algorithm.engine.weights[0][0], model.encoder.hidden.weight)
    assert torch.equal(model.encoder.hidden.weight, state["model"]["encoder.hidden.weight"])
