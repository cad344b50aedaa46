from tests.integration.test_record_live import live, curl  # noqa: F401
import time, orjson

def test_debug(live):  # noqa: F811
    live.put_pods()
    curl(live.checkout_ip, "/ok?warm=1")
    for i in range(30):
        got = live.entries("http")
        if got:
            break
        time.sleep(1)
    print(orjson.dumps(got[:2], option=orjson.OPT_INDENT_2).decode())
    print(live.entries('url == "/ok?warm=1"'))
    print(live.api("GET", "/api/health").text[:3000])
