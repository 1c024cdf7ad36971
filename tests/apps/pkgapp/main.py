import hydra

from .helper import describe


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg):
    print(f"pkgapp x={cfg.x}", flush=True)
    return describe(cfg.x)


if __name__ == "__main__":
    main()
