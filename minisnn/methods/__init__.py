"""One module per paper: eventrpg, asa, staa, hsd, razor; and the data plumbing their claims experiments share.

The protocol of every experiment: the data stay fixed (dataset seed 0); the training ``seed`` draws the
initialisation, the batch order and the validation split, 20 % of the training set (stratified); each arm keeps
the epoch of its best validation accuracy (``train.fit``) and is tested once on the test set.
"""
import numpy as np


def topk_mask(m, k, axis):
    """1 on the k largest entries of array ``m`` along ``axis`` (ties: the lower index wins), else 0."""
    rank = np.argsort(np.argsort(-m, axis=axis, kind="stable"), axis=axis, kind="stable")
    return (rank < k).astype(m.dtype)


def experiment_data(dataset, seed, n_train=None, n_test=None, **kwargs):
    """(train, val, test): ``data_tools.datasets.load(dataset, 0, n_train, n_test, **kwargs)`` or a (train, test) pair,
    20 % of the training set held out for validation (drawn with ``seed``)."""
    from data_tools.datasets import load, validation_split
    train_set, test_set = dataset if isinstance(dataset, tuple) else load(dataset, 0, n_train, n_test, **kwargs)
    return (*validation_split(train_set, 0.2, seed), test_set)


def loaders(data, T, batch_size, seed, eval_batch_size=128, **kwargs):
    """DataLoaders of T frames for (train, val, test): training batches shuffled by ``default_rng(seed)``, val and
    test in order; ``kwargs`` go to every loader (e.g. ``split_by``)."""
    from data_tools.loader import DataLoader
    train_set, val_set, test_set = data
    return (DataLoader(train_set, batch_size, T, rng=np.random.default_rng(seed), **kwargs),
            *(DataLoader(s, eval_batch_size, T, shuffle=False, **kwargs) for s in (val_set, test_set)))
