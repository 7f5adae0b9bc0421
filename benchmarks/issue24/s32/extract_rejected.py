"""Write the learned sampler that validation rejected (kept in the provenance) as its own file, for the ablation."""
import sys
from lsdd.sampling.sampler import Sampler
smp = Sampler.load(sys.argv[1]); r = smp.provenance["rejected_learned"]
smp.replace(times=tuple(r["times"]), coeffs=tuple(r["coeffs"]), movers=r["movers"], conditioning=r["conditioning"],
            final=r["final"]).save(sys.argv[2])
print("wrote", sys.argv[2])
