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

# Plain redis-py (not cluster-aware) against each node: any node answers
# for any key, multi-key commands across slots included.
import redis

plain = [redis.Redis(host=a.split(":")[0], port=int(a.split(":")[1]), decode_responses=True) for a in sys.argv[1:]]
for i in range(300):
    assert plain[i % len(plain)].set(f"plain:{i}", f"p{i}") is True
for i in range(300):
    got = plain[(i + 1) % len(plain)].get(f"plain:{i}")
    assert got == f"p{i}", (i, got)
keys = [f"plain:{i}" for i in range(50)]
assert plain[0].mget(keys) == [f"p{i}" for i in range(50)]
assert plain[1].delete(*keys) == 50
assert plain[2].exists(*keys) == 0
assert plain[0].dbsize() == 1000 + 250 + 1, plain[0].dbsize()
print("ok: plain redis-py through every node")
