"""Ordered map over worker processes, for the CPU-bound loops of prepare and the synthetic writer."""

import collections
from concurrent import futures
import multiprocessing


def ordered_map(fn, items, num_workers, max_pending_per_worker=32):
  """Yields fn(item) in item order; num_workers <= 1 runs in this process.

  At most max_pending_per_worker * num_workers items are in flight, so results
  (image bytes) never pile up in memory when the consumer is slower. Workers are
  spawned, not forked: they import only fn's module, whatever the parent runs
  (TensorFlow's threads do not survive a fork); fn must be a module-level
  function. A worker that dies raises BrokenProcessPool instead of hanging.
  """
  if num_workers <= 1:
    yield from map(fn, items)
    return
  pool = futures.ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn"))
  pending = collections.deque()
  try:
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= max_pending_per_worker * num_workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
  finally:
    pool.shutdown(wait=True, cancel_futures=True)
