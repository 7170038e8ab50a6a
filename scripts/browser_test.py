"""The dashboard in a real browser (Debian's chromium, driven by Playwright; never a downloaded
browser): sign in, upload a CSV, submit, watch progress reach 100 % while the simulator runs,
open a person and see the phone number, redeliver the callback, download the CSV and compare it
with `enrichd export --with-input`; then, as an operator, the system page (Apollo's allowance, this
replica live), and the usage page (credits per day and calls per minute as SVG charts, the
waterfall vendors); then a job with person events, whose page follows the job's event stream
and refreshes its summary on each event. Screenshots of each page go to $SHOTS."""

import json
import os
import subprocess
import sys
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE, KEY, CSV, SHOTS, ENRICHD, CALLBACK, ADMIN_KEY = sys.argv[1:8]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    page.goto(f"{BASE}/ui/sign-in")
    page.fill("#key", KEY)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{BASE}/ui/jobs")
    page.screenshot(path=f"{SHOTS}/jobs-empty.png", full_page=True)

    page.goto(f"{BASE}/ui/new")
    page.set_input_files("#file", CSV)
    page.check("input[value=reveal_phone_number]")
    page.check("input[value=run_waterfall_email]")
    page.fill("#callback_url", CALLBACK)
    page.click("#preview")
    expect(page.locator("#mapping")).to_contain_text("email")
    page.screenshot(path=f"{SHOTS}/new-job-preview.png", full_page=True)
    page.click("#submit")
    page.wait_for_url(f"{BASE}/ui/jobs/*")
    job_id = page.url.rsplit("/", 1)[1]
    # htmx refreshes the summary in place; no reload here.
    expect(page.locator("#percent")).to_have_text("100 %", timeout=120_000)
    page.reload()
    page.screenshot(path=f"{SHOTS}/job.png", full_page=True)
    page.screenshot(path=f"{SHOTS}/job-top.png", clip={"x": 0, "y": 0, "width": 1280, "height": 800})

    page.goto(f"{BASE}/ui/jobs")
    expect(page.locator("#jobs")).to_contain_text(job_id)
    page.screenshot(path=f"{SHOTS}/jobs.png", full_page=True)

    page.goto(f"{BASE}/ui/jobs/{job_id}")
    page.click("#people-table tbody tr:first-child td.num a")
    phone = page.locator("#phones tbody td.mono").first
    expect(phone).to_contain_text("+")
    page.screenshot(path=f"{SHOTS}/person.png", full_page=True)

    page.goto(f"{BASE}/ui/jobs/{job_id}")
    expect(page.locator("#callback-attempts")).to_contain_text("scheduled", timeout=60_000)
    page.click("#redeliver")
    # The redelivery runs after the redirect; the finished job's page is not live, so reload.
    for _ in range(300):
        if "manual" in page.locator("#callback-attempts").inner_text():
            break
        page.wait_for_timeout(200)
        page.reload()
    expect(page.locator("#callback-attempts")).to_contain_text("manual")
    page.screenshot(path=f"{SHOTS}/job-redelivered.png", full_page=True)

    with page.expect_download() as d:
        page.click("#download")
    downloaded = open(d.value.path(), encoding="utf-8").read()
    exported = subprocess.run([ENRICHD, "export", job_id, "--format", "csv", "--with-input"], check=True,
                              capture_output=True, text=True,
                              env={**os.environ, "ENRICHD_URL": BASE, "ENRICHD_KEY": KEY}).stdout
    assert downloaded == exported, f"download differs from the export:\n{downloaded}\n---\n{exported}"

    # The usage page: charts drawn on the server, with the figures of this client's one job.
    page.goto(f"{BASE}/ui/usage")
    credits = page.locator("#credits-chart")
    expect(credits).to_be_visible()
    assert credits.get_attribute("role") == "img"
    assert page.locator("#credits-chart > title").text_content() == "Credits per day by kind"
    assert credits.locator("g.column").count() == 30, "30 days"
    # One job today: today's column (the last) holds every bar, and they add up to its credits.
    today = credits.locator("g.column").last
    assert credits.locator("rect.bar").count() == today.locator("rect.bar").count() > 0
    series = sorted(today.locator("rect.bar").evaluate_all("bs => bs.map(b => b.dataset.series)"))
    # A waterfall request reports no synchronous credits, and the waterfall may find nobody among
    # three people: the phone reveal surely has its bar, each series at most one.
    assert "phone" in series and set(series) <= {"sync", "phone", "waterfall"} and len(set(series)) == len(series), series
    drawn = sum(today.locator("rect.bar").evaluate_all("bs => bs.map(b => parseFloat(b.dataset.value))"))
    total = float(page.locator("#credits-total").inner_text())
    assert abs(drawn - total) < 1e-6 and total > 0, (drawn, total)
    calls = page.locator("#calls-chart")
    expect(calls).to_be_visible()
    assert calls.locator("g.column").count() >= 180, "three hours of minutes"
    answered = sum(calls.locator("rect.bar").evaluate_all("bs => bs.map(b => parseFloat(b.dataset.value))"))
    assert answered >= 1, "this job's calls are in the chart"
    vendors = page.locator("#vendors tbody tr")
    assert vendors.count() >= 1 and "email" in page.locator("#vendors").inner_text()
    page.screenshot(path=f"{SHOTS}/usage.png", full_page=True)

    # The operator's view, in its own browser context (its own session cookie).
    ops = browser.new_page(viewport={"width": 1280, "height": 900})
    ops.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    ops.goto(f"{BASE}/ui/sign-in")
    ops.fill("#key", ADMIN_KEY)
    ops.click("button[type=submit]")
    expect(ops).to_have_url(f"{BASE}/ui/jobs")
    expect(ops.locator("#jobs")).to_contain_text(job_id)
    ops.goto(f"{BASE}/ui/system")
    expect(ops.locator("#allowance")).to_contain_text("minute")
    expect(ops.locator("#replicas")).to_contain_text("live")
    ops.screenshot(path=f"{SHOTS}/system.png", full_page=True)

    # A job with person events: its page follows /ui/jobs/{id}/events (job-events.js) and htmx
    # refreshes the summary on each event, long before the 30 s fallback poll.
    live = browser.new_page(viewport={"width": 1280, "height": 900})
    live.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    live.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    received = []  # (seconds since the page opened, event name) of each server-sent event
    requests = []  # (seconds since the page opened, resource type, path) of each request
    cdp = live.context.new_cdp_session(live)
    cdp.send("Network.enable")
    opened = time.monotonic()
    cdp.on("Network.eventSourceMessageReceived",
           lambda m: received.append((time.monotonic() - opened, m["eventName"])))
    live.on("request", lambda r: requests.append(
        (time.monotonic() - opened, r.resource_type, r.url.removeprefix(BASE))))
    live.goto(f"{BASE}/ui/sign-in")
    live.fill("#key", KEY)
    live.click("button[type=submit]")
    expect(live).to_have_url(f"{BASE}/ui/jobs")
    submit = urllib.request.Request(f"{BASE}/v1/jobs", method="POST", headers={
        "authorization": f"Bearer {KEY}", "content-type": "application/json"}, data=json.dumps({
            "people": [{"email": f"live{i}@harbor-analytics.io"} for i in range(3)],
            "reveal_phone_number": True, "events": ["person.completed"]}).encode())
    live_id = json.load(urllib.request.urlopen(submit))["id"]
    opened = time.monotonic()
    live.goto(f"{BASE}/ui/jobs/{live_id}")
    section = live.locator("#summary")
    assert section.get_attribute("data-events") == f"/ui/jobs/{live_id}/events", live.inner_html("#summary")
    assert section.get_attribute("hx-trigger") == "job-event, every 30s"
    expect(live.locator("#percent")).to_have_text("100 %", timeout=120_000)
    expect(live.locator("#summary .state-completed")).to_be_visible(timeout=29_000)
    live.wait_for_timeout(4_000)  # longer than EventSource's reconnect delay (3 s)
    streams = [r for r in requests if r[2] == f"/ui/jobs/{live_id}/events"]
    refreshes = [r[0] for r in requests if r[2] == f"/ui/jobs/{live_id}/summary"]
    names = [n for _, n in received]
    assert [r[1] for r in streams] == ["eventsource"], f"one stream, closed after job.completed: {streams}"
    assert "person.completed" in names and names[-1] == "job.completed", names
    # The first refresh follows the first event (not the fallback, 30 s after the page opened).
    assert refreshes and received[0][0] - 0.5 <= refreshes[0] < 29, (refreshes, received)
    assert live.locator("#summary").get_attribute("hx-trigger") is None, "a finished summary stops refreshing"
    live.screenshot(path=f"{SHOTS}/job-live.png", full_page=True)
    assert not errors, f"console errors (CSP?): {errors}"
    browser.close()
    print(f"browser test passed: job {job_id}; live job {live_id}: events {names}, summary refreshed at "
          f"{[round(t, 1) for t in refreshes]} s (first event at {received[0][0]:.1f} s); screenshots in {SHOTS}")
