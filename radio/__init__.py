"""Radio backends for the UE–eNodeB link: emulated (LTE model), oai (RF simulator), b210 (real SDR)."""
