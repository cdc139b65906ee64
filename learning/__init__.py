"""Machine learning for fedchain: pure numpy/PyTorch, no network, no asyncio, no other fedchain package.

The unit of every update is one flat float32 vector of all model parameters.

Module map:

- ``models``: model zoo (FedAvg 2NN ``mlp``, small ``cnn``, ``logreg``, ``tabular_mlp``) built
  deterministically from a seed, the ``Net`` interface; ``get_flat`` / ``set_flat`` / ``num_params``.
- ``dense``: the dense models in numpy (a node of a dense task never imports torch).
- ``torchnet``: torch modules (the CNN, a genesis's own model) behind the ``Net`` interface.
- ``data``: the flat :class:`~learning.data.Dataset` layout and loaders (Fashion-MNIST IDX,
  scikit-learn digits, FedProx Synthetic(alpha, beta), CIFAR-10 python batches), stratified split.
- ``partition``: IID, Dirichlet label skew, FedAvg shards, quantity skew, natural groups; each
  client with a local validation split.
- ``train``: ``local_train`` (SGD/Adam, FedProx term) returning the delta, ``fedsgd_step``,
  ``evaluate``, the learning-rate schedule ``lr_at`` (eta0 / sqrt(t + beta)).
- ``optimizers``: the local SGD and Adam steps on a flat vector, torch.optim's update rules.
- ``compression``: top-k sparsification with error feedback, float16/int8 values, validated wire
  form and exact byte counts.
- ``privacy``: clip-and-noise Gaussian mechanism and a per-node RDP accountant with a budget.
- ``privacy_preset``: the genesis privacy preset (``off`` or ``local-dp``), parsed strictly.
- ``dpsgd``: DP-SGD local training (per-example clipping, Poisson-sampled batches).
- ``aggregation``: robust aggregation rules behind one ``aggregate`` entry point, staleness weights.
- ``attacks``: model and data poisoning attacks (for evaluation only).
- ``selection``: which nodes' updates enter a block (random, trust, particle swarm).
- ``detection``: precision/recall/ROC of rejected updates.
- ``sim``: many virtual nodes in one process, synchronous or asynchronous, with all of the above.
"""
