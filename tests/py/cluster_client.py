"""redis-py's RedisCluster against a ringcache cluster: discovers the nodes
from CLUSTER SLOTS, routes each key to its slot's primary, follows MOVED.
Usage: python cluster_client.py HOST:PORT [HOST:PORT ...]; exits non-zero
on any wrong answer."""
import sys

from redis.cluster import ClusterNode, RedisCluster

nodes = [ClusterNode(a.split(":")[0], int(a.split(":")[1])) for a in sys.argv[1:]]
rc = RedisCluster(startup_nodes=nodes, decode_responses=True)
for i in range(1000):
    assert rc.set(f"py:{i}", f"v{i}") is True
for i in range(1000):
    got = rc.get(f"py:{i}")
    assert got == f"v{i}", (i, got)
assert rc.mget([f"{{tag}}:{i}" for i in range(3)]) == [None, None, None]
assert rc.incr("py:counter") == 1
assert len(rc.get_nodes()) == len(nodes), rc.get_nodes()
print("ok: 1000 keys through RedisCluster over", len(rc.get_nodes()), "nodes")
