"""Task functions living in a plain module (imported by the driver, never run as __main__)."""


def task(cfg):
    print(f"module task x={cfg.x}", flush=True)
    return {"from": __name__, "x": cfg.x}
