"""A deterministic synthetic stock market: the demo exchange's data and the tests' oracle.

Every figure is a pure function of (seed, security, day), so any page of any date range is
generated on demand and two markets with the same seed and `today` agree exactly. The
`expected_*` methods give the rows a correct backfill must store; the `*_wire` methods give
the API's answers, including what a client must see through: entries without figures,
superseded revisions of a report, news without a dividend notice.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from ntx.model import DateRange, Row
from ntx.nepal import SESSION_WEEKDAYS

_MASK = (1 << 64) - 1
HOLIDAY_RATE = 0.04  # share of days the exchange is closed, weekends apart
UNANNOUNCED_RATE = 0.15  # share of closures the holiday list does not name
HOLIDAY_NAMES = ("Public holiday", "Dashain", "Tihar", "Chhath", "Holi", "Buddha Jayanti")
# How rarely each kind of security trades, at least: about 400 of 600 trade in a session,
# as on the exchange (one 500-row page of the by-date answer)
ILLIQUIDITY = {"Promoter Share": 0.7, "Non-Convertible Debentures": 0.85, "Mutual Fund": 0.2}
FIRST_REPORT_YEAR = 2015  # reports and dividends start at this fiscal year (AD start year)


_MIX_START = 0x9E3779B97F4A7C15


def _mix(*parts: int) -> int:
    """splitmix64 over the parts: a fast, well-spread hash of small integers."""
    h = _MIX_START
    for part in parts:
        h = ((h ^ (part & _MASK)) * 0xBF58476D1CE4E5B9) & _MASK
        h ^= h >> 31
        h = (h * 0x94D049BB133111EB) & _MASK
        h ^= h >> 29
    return h


def _unit(*parts: int) -> float:
    """A number in [0, 1) fixed by the parts."""
    return _mix(*parts) / 2.0**64


INSTRUMENTS = (
    ("Equity", 0.46),
    ("Promoter Share", 0.25),
    ("Non-Convertible Debentures", 0.15),
    ("Mutual Fund", 0.14),
)
SECTORS = (
    ("Commercial Banks", "Bank Limited", "Nepal Rastra Bank"),
    ("Development Banks", "Development Bank Limited", "Nepal Rastra Bank"),
    ("Finance", "Finance Limited", "Nepal Rastra Bank"),
    ("Microfinance", "Laghubitta Bittiya Sanstha Limited", "Nepal Rastra Bank"),
    ("Life Insurance", "Life Insurance Limited", "Nepal Insurance Authority"),
    ("Non Life Insurance", "Insurance Limited", "Nepal Insurance Authority"),
    ("Hydro Power", "Hydropower Limited", "Department of Electricity Development"),
    ("Manufacturing And Processing", "Industries Limited", "Office of the Company Registrar"),
    ("Hotels And Tourism", "Hotels Limited", "Office of the Company Registrar"),
    ("Investment", "Investment Limited", "Office of the Company Registrar"),
    ("Tradings", "Trading Limited", "Office of the Company Registrar"),
    ("Others", "Limited", "Office of the Company Registrar"),
)
KNOWN_SYMBOLS = (
    ("NABIL", "Nabil", 0),
    ("ADBL", "Agricultural Development", 0),
    ("NICA", "NIC Asia", 0),
    ("SCB", "Standard Chartered", 0),
    ("HBL", "Himalayan", 0),
    ("EBL", "Everest", 0),
    ("NMB", "NMB", 0),
    ("PRVU", "Prabhu", 0),
    ("SBL", "Siddhartha", 0),
    ("KBL", "Kumari", 0),
    ("GBIME", "Global IME", 0),
    ("SANIMA", "Sanima", 0),
    ("MBL", "Machhapuchchhre", 0),
    ("UPPER", "Upper Tamakoshi", 6),
    ("CHCL", "Chilime", 6),
    ("NLIC", "Nepal Life", 4),
    ("SHIVM", "Shivam Cements", 7),
    ("SHL", "Soaltee", 8),
    ("CIT", "Citizen Investment", 9),
    ("STC", "Salt Trading", 10),
    ("NTC", "Nepal Telecom", 11),
    ("GBBL", "Garima", 1),
)
PLACES = (
    "Kathmandu",
    "Pokhara",
    "Lumbini",
    "Himalayan",
    "Sagarmatha",
    "Gandaki",
    "Karnali",
    "Bagmati",
    "Mahalaxmi",
    "Shangrila",
    "Kamana",
    "Sindhu",
    "Janaki",
    "Mithila",
    "Koshi",
    "Sudur",
    "Annapurna",
    "Manakamana",
    "Tinau",
    "Dhaulagiri",
    "Makalu",
    "Rara",
    "Phewa",
    "Triveni",
    "Gorkha",
    "Mustang",
    "Ilam",
    "Chitwan",
    "Bhairahawa",
    "Dolakha",
)
QUARTER_NAMES = ("First Quarter", "Second Quarter", "Third Quarter", "Fourth Quarter")


@dataclass(frozen=True, slots=True)
class DemoSecurity:
    """One security of the demo market with its hidden parameters."""

    security_id: int
    company_id: int
    symbol: str
    name: str
    security_name: str
    sector: str
    regulator: str
    instrument_type: str
    status: str  # A active, S suspended, D delisted (absent from the security list)
    listed: date
    base_price: float
    drift: float
    swing: tuple[float, float, float, float]  # two sine waves: amplitude, period
    phases: tuple[float, float]
    illiquidity: float
    base_volume: int
    listed_shares: int
    promoter_pct: float

    @property
    def has_fundamentals(self) -> bool:
        return self.instrument_type in ("Equity", "Mutual Fund")


def fiscal_year_name(start_year: int) -> str:
    """Nepal's fiscal year that starts in mid-July of AD `start_year`, in Bikram Sambat."""
    return f"{start_year + 57}/{start_year + 58}"


class Market:
    """The demo market for a seed: `securities` listed securities, history up to `today`."""

    def __init__(self, seed: int = 1, securities: int = 600, today: date | None = None) -> None:
        from ntx.nepal import nepal_today

        if securities < 1:
            raise ValueError("a market needs at least one security")
        self.seed = seed
        self.today = today or nepal_today()
        self.securities = _generate(seed, securities)
        self.by_id = {sec.security_id: sec for sec in self.securities}
        self._traded_cache = lru_cache(maxsize=256)(self._traded_days)

    # -------------------------------------------------------------- lists

    def listed(self) -> list[DemoSecurity]:
        """The securities of the security list (every one that is not delisted)."""
        return [sec for sec in self.securities if sec.status != "D"]

    def company_list_wire(self) -> list[dict[str, Any]]:
        return [
            {
                "id": sec.company_id,
                "companyName": sec.name,
                "symbol": sec.symbol,
                "securityName": sec.security_name,
                "status": sec.status,
                "companyEmail": f"info@{sec.symbol.lower()}.com.np",
                "website": f"https://www.{sec.symbol.lower()}.com.np",
                "sectorName": sec.sector,
                "regulatoryBody": sec.regulator,
                "instrumentType": sec.instrument_type,
            }
            for sec in self.securities
        ]

    def security_list_wire(self, non_delisted: bool = True) -> list[dict[str, Any]]:
        chosen = self.listed() if non_delisted else self.securities
        return [
            {
                "id": sec.security_id,
                "symbol": sec.symbol,
                "securityName": sec.security_name,
                "activeStatus": sec.status,
            }
            for sec in chosen
        ]

    def expected_securities(self) -> list[Row]:
        return [
            (
                sec.security_id,
                sec.symbol,
                sec.name,
                sec.sector,
                sec.instrument_type,
                sec.status,
                sec.security_name,
                sec.company_id,
                f"info@{sec.symbol.lower()}.com.np",
                f"https://www.{sec.symbol.lower()}.com.np",
                sec.regulator,
            )
            for sec in self.listed()
        ]

    # -------------------------------------------------------------- prices

    def is_trading_day(self, day: date) -> bool:
        """Whether the exchange held a session: Sunday to Thursday, not a holiday."""
        return day.weekday() in SESSION_WEEKDAYS and not self._closed(day)

    def _closed(self, day: date) -> bool:
        return _unit(self.seed, 7, day.toordinal()) < HOLIDAY_RATE

    def holidays(self, year: int) -> list[tuple[date, str]]:
        """The year's holiday list as the exchange publishes it: (date, description), any
        day of the week. A few closures are missing from it (`UNANNOUNCED_RATE`): a client
        learns of those only from an empty answer for the day."""
        day, end = date(year, 1, 1), date(year, 12, 31)
        found = []
        while day <= end:
            if self._closed(day) and _unit(self.seed, 8, day.toordinal()) >= UNANNOUNCED_RATE:
                name = HOLIDAY_NAMES[_mix(self.seed, 9, day.toordinal()) % len(HOLIDAY_NAMES)]
                found.append((day, name))
            day += timedelta(days=1)
        return found

    def holidays_wire(self, year: int) -> list[dict[str, Any]]:
        return [
            {"holidayDate": day.isoformat(), "holidayDescription": name}
            for day, name in self.holidays(year)
        ]

    def last_session(self, on_or_before: date) -> date | None:
        """The latest session on or before a day (within the last 60 days), if any."""
        day = on_or_before
        for _ in range(60):
            if self.is_trading_day(day):
                return day
            day -= timedelta(days=1)
        return None

    def _trades_on(self, sec: DemoSecurity, day: date) -> bool:
        return (
            sec.listed <= day <= self.today
            and self.is_trading_day(day)
            and _unit(self.seed, sec.security_id, day.toordinal(), 3) >= sec.illiquidity
        )

    def _traded_days(self, security_id: int, start: date, end: date) -> tuple[date, ...]:
        sec = self.by_id[security_id]
        days = []
        day = min(end, self.today)
        while day >= max(start, sec.listed):
            if self._trades_on(sec, day):
                days.append(day)
            day -= timedelta(days=1)
        return tuple(days)

    def traded_days(self, security_id: int, period: DateRange) -> tuple[date, ...]:
        """The days the security traded in `period`, most recent first."""
        return self._traded_cache(security_id, period.start, period.end)

    def _figures(self, sec: DemoSecurity, day: date) -> tuple[float, float, float, int]:
        """(high, low, close, volume) of a traded day."""
        security_id, t = sec.security_id, (day - sec.listed).days
        amp1, period1, amp2, period2 = sec.swing
        noise = _unit(self.seed, security_id, day.toordinal(), 11) - 0.5
        log_price = (
            math.log(sec.base_price)
            + sec.drift * t / 365.0
            + amp1 * math.sin(2 * math.pi * t / period1 + sec.phases[0])
            + amp2 * math.sin(2 * math.pi * t / period2 + sec.phases[1])
            + 0.03 * noise
        )
        close = round(max(math.exp(log_price), 5.0), 1)
        high = round(close * (1 + 0.03 * _unit(self.seed, security_id, day.toordinal(), 12)), 1)
        low = round(close * (1 - 0.03 * _unit(self.seed, security_id, day.toordinal(), 13)), 1)
        volume = max(
            10,
            int(sec.base_volume * (0.2 + 1.6 * _unit(self.seed, security_id, day.toordinal(), 14))),
        )
        return high, low, close, volume

    def price(self, security_id: int, day: date) -> Row:
        """The first nine `prices` columns of one traded day as the per-security history
        gives them: (security_id, date, None, high, low, close, volume, turnover, trades),
        with no open. The by-date columns after them are null for such a row."""
        sec = self.by_id[security_id]
        high, low, close, volume = self._figures(sec, day)
        turnover = round(volume * (high + low) / 2, 2)
        trades = max(1, volume // (40 + sec.security_id % 60))
        return (security_id, day.isoformat(), None, high, low, close, volume, turnover, trades)

    def day_price(self, security_id: int, day: date) -> Row:
        """The whole `prices` row of one traded day, as the by-date answer gives it:
        (security_id, date, open, high, low, close, volume, turnover, trades, prev_close,
        avg_price, high_52w, low_52w). The 52-week range is synthetic, not a real maximum."""
        sec = self.by_id[security_id]
        _, _, _, high, low, close, volume, turnover, trades = self.price(security_id, day)
        previous = self._previous_close(sec, day)
        drift = 0.02 * (_unit(self.seed, security_id, day.toordinal(), 15) - 0.5)
        opened = min(high, max(low, round((previous or close) * (1 + drift), 1)))
        reach = _unit(self.seed, security_id, day.toordinal() // 30, 16)
        return (
            security_id,
            day.isoformat(),
            opened,
            high,
            low,
            close,
            volume,
            turnover,
            trades,
            previous,
            round(turnover / volume, 2),
            round(max(high, close * (1.1 + 0.3 * reach)), 1),
            round(min(low, close * (0.9 - 0.3 * reach)), 1),
        )

    def _previous_close(self, sec: DemoSecurity, day: date) -> float | None:
        """The close of the security's previous traded day (within 60 days), if any."""
        before = day - timedelta(days=1)
        for _ in range(60):
            if before < sec.listed:
                return None
            if self._trades_on(sec, before):
                return self._figures(sec, before)[2]
            before -= timedelta(days=1)
        return None

    def expected_prices(self, security_id: int, period: DateRange) -> list[Row]:
        """The rows a per-security history backfill of `period` stores."""
        return [
            (*self.price(security_id, day), None, None, None, None)
            for day in self.traded_days(security_id, period)
        ]

    def traded_on(self, day: date) -> list[DemoSecurity]:
        """Every security that traded on `day` (delisted ones too, while they were listed),
        by symbol: the rows of the by-date answer."""
        return sorted(
            (sec for sec in self.securities if self._trades_on(sec, day)), key=lambda s: s.symbol
        )

    def expected_day(self, day: date) -> list[Row]:
        """The rows a by-date backfill of `day` stores."""
        return [self.day_price(sec.security_id, day) for sec in self.traded_on(day)]

    def history_page_wire(
        self, security_id: int, period: DateRange, page: int, size: int
    ) -> dict[str, Any]:
        """One Spring-style page of history, most recent first."""
        days = self.traded_days(security_id, period)
        content = []
        for day in days[page * size : (page + 1) * size]:
            _, _, _, high, low, close, volume, turnover, trades = self.price(security_id, day)
            content.append(
                {
                    "businessDate": day.isoformat(),
                    "highPrice": high,
                    "lowPrice": low,
                    "closePrice": close,
                    "totalTradedQuantity": volume,
                    "totalTradedValue": turnover,
                    "totalTrades": trades,
                }
            )
        return spring_page(content, page, size, len(days))

    def today_price_wire(self, day: date, page: int, size: int) -> dict[str, Any]:
        """One page of the by-date answer (`today-price`) for a business date."""
        traded = self.traded_on(day)
        content = []
        for index, sec in enumerate(traded[page * size : (page + 1) * size], page * size):
            row = self.day_price(sec.security_id, day)
            _, _, opened, high, low, close, volume, turnover, trades, prev, avg, hi52, lo52 = row
            content.append(
                {
                    "id": day.toordinal() * 10_000 + index,
                    "businessDate": day.isoformat(),
                    "securityId": sec.security_id,
                    "symbol": sec.symbol,
                    "securityName": sec.security_name,
                    "openPrice": opened,
                    "highPrice": high,
                    "lowPrice": low,
                    "closePrice": close,
                    "totalTradedQuantity": volume,
                    "totalTradedValue": turnover,
                    "previousDayClosePrice": prev,
                    "fiftyTwoWeekHigh": hi52,
                    "fiftyTwoWeekLow": lo52,
                    "lastUpdatedTime": f"{day.isoformat()}T15:00:00",
                    "lastUpdatedPrice": close,
                    "totalTrades": trades,
                    "averageTradedPrice": avg,
                    "marketCapitalization": round(close * sec.listed_shares / 1e6, 2),
                }
            )
        return spring_page(content, page, size, len(traded))

    # -------------------------------------------------------------- reports

    def _fiscal_years(self, sec: DemoSecurity) -> Iterator[int]:
        """AD start years of the fiscal years since listing that have begun by today."""
        first = max(FIRST_REPORT_YEAR, sec.listed.year - (1 if sec.listed.month < 7 else 0))
        year = first
        while date(year, 7, 16) <= self.today:
            yield year
            year += 1

    def _report_facts(self, sec: DemoSecurity) -> list[tuple[Row, str]]:
        """(row, published date) of every report published by today."""
        facts: list[tuple[Row, str]] = []
        if not sec.has_fundamentals:
            return facts
        for year in self._fiscal_years(sec):
            ends = (
                date(year, 10, 16),
                date(year + 1, 1, 14),
                date(year + 1, 4, 13),
                date(year + 1, 7, 15),
            )
            periods = [(f"Q{q + 1}", ends[q] + timedelta(days=30)) for q in range(4)]
            periods.append(("annual", date(year + 1, 7, 15) + timedelta(days=180)))
            for number, (period, published) in enumerate(periods):
                if published > self.today:
                    continue
                facts.append(
                    (self._report_row(sec, year, number, period, 0), published.isoformat())
                )
        return facts

    def _report_row(
        self, sec: DemoSecurity, year: int, number: int, period: str, revision: int
    ) -> Row:
        def u(k: int) -> float:
            return _unit(self.seed, sec.security_id, year, number, revision, k)

        eps = round(-5 + 60 * u(1), 2)
        return (
            sec.security_id,
            fiscal_year_name(year),
            period,
            eps,
            round(5 + 40 * u(2), 2),
            round(80 + 250 * u(3), 2),
            float(sec.listed_shares * 100),
            round(eps * sec.listed_shares * (0.25 if period != "annual" else 1.0), 2),
        )

    def expected_reports(self, security_id: int) -> list[Row]:
        return [row for row, _ in self._report_facts(self.by_id[security_id])]

    def reports_wire(self, security_id: int) -> list[dict[str, Any]]:
        sec = self.by_id[security_id]
        entries: list[dict[str, Any]] = []
        for index, (row, published) in enumerate(self._report_facts(sec)):
            year = int(row[1][:4]) - 57
            number = ("Q1", "Q2", "Q3", "Q4", "annual").index(row[2])
            base_id = security_id * 1000 + index * 3
            if _unit(self.seed, security_id, year, number, 21) < 0.08:
                # an older revision with other figures, superseded by the published one
                old = self._report_row(sec, year, number, row[2], 1)
                entries.append(_report_entry(base_id, old, f"{published}T08:00:00", year))
            entries.append(_report_entry(base_id + 1, row, f"{published}T10:00:00", year))
            if _unit(self.seed, security_id, year, number, 22) < 0.10:
                entries.append(
                    {
                        "id": base_id + 2,
                        "activeStatus": "A",
                        "modifiedDate": f"{published}T11:00:00",
                        "fiscalReport": None,
                        "applicationDocumentDetailsList": [],
                    }
                )
        random.Random(_mix(self.seed, security_id, 23)).shuffle(entries)
        return entries

    # -------------------------------------------------------------- dividends

    def _dividend_facts(self, sec: DemoSecurity) -> list[Row]:
        rows: list[Row] = []
        if not sec.has_fundamentals:
            return rows
        for year in self._fiscal_years(sec):
            declared = date(year + 1, 7, 15) + timedelta(days=100)
            if declared > self.today or _unit(self.seed, sec.security_id, year, 31) < 0.4:
                continue
            bonus = round(20 * _unit(self.seed, sec.security_id, year, 33), 2)
            rows.append(
                (
                    sec.security_id,
                    fiscal_year_name(year),
                    round(30 * _unit(self.seed, sec.security_id, year, 32), 2),
                    bonus if _unit(self.seed, sec.security_id, year, 34) < 0.5 else 0.0,
                    10.0 if _unit(self.seed, sec.security_id, year, 35) < 0.05 else 0.0,
                )
            )
        return rows

    def expected_dividends(self, security_id: int) -> list[Row]:
        return self._dividend_facts(self.by_id[security_id])

    def dividends_wire(self, security_id: int) -> list[dict[str, Any]]:
        entries = []
        for index, row in enumerate(self._dividend_facts(self.by_id[security_id])):
            year = int(row[1][:4]) - 57
            entry_id = security_id * 1000 + index * 2
            modified = f"{date(year + 1, 7, 15) + timedelta(days=100)}T09:00:00"
            entries.append(
                {
                    "id": entry_id,
                    "modifiedDate": modified,
                    "companyNews": {
                        "newsHeadline": f"Dividend for fiscal year {row[1]}",
                        "dividendsNotice": {
                            "financialYear": _fiscal_year_wire(year),
                            "cashDividend": row[2],
                            "bonusShare": row[3],
                            "rightShare": row[4],
                        },
                    },
                }
            )
            if _unit(self.seed, security_id, year, 36) < 0.15:
                entries.append(
                    {
                        "id": entry_id + 1,
                        "modifiedDate": modified,
                        "companyNews": {
                            "newsHeadline": "Book closure notice",
                            "dividendsNotice": None,
                        },
                    }
                )
        return entries

    # -------------------------------------------------------------- ownership

    def expected_ownership(self, security_id: int) -> Row:
        sec = self.by_id[security_id]
        promoter = round(sec.listed_shares * sec.promoter_pct / 100)
        return (
            security_id,
            float(sec.listed_shares),
            float(sec.listed_shares * 100),
            sec.listed_shares - promoter,
            round(100 - sec.promoter_pct, 2),
            float(promoter),
            sec.promoter_pct,
        )

    def ownership_wire(self, security_id: int) -> dict[str, Any]:
        sec = self.by_id[security_id]
        _, listed, paid_up, public, public_pct, promoter, promoter_pct = self.expected_ownership(
            security_id
        )
        return {
            "security": {
                "id": security_id,
                "symbol": sec.symbol,
                "isin": f"NPE{security_id:09d}",
                "faceValue": 100.0,
            },
            "securityDailyTradeDto": {"securityId": str(security_id)},
            "stockListedShares": listed,
            "paidUpCapital": paid_up,
            "publicShares": public,
            "publicPercentage": public_pct,
            "promoterShares": promoter,
            "promoterPercentage": promoter_pct,
        }


def spring_page(content: list[Any], page: int, size: int, total: int) -> dict[str, Any]:
    """A Spring `Page` object around one page's rows."""
    total_pages = math.ceil(total / size)
    return {
        "content": content,
        "number": page,
        "size": size,
        "totalElements": total,
        "totalPages": total_pages,
        "first": page == 0,
        "last": page >= total_pages - 1,
        "numberOfElements": len(content),
    }


def _fiscal_year_wire(year: int) -> dict[str, Any]:
    return {
        "id": year + 57,
        "fyName": fiscal_year_name(year),
        "fyNameNepali": fiscal_year_name(year),
        "fromYear": str(year + 57),
        "toYear": str(year + 58),
    }


def _report_entry(entry_id: int, row: Row, modified: str, year: int) -> dict[str, Any]:
    period = row[2]
    quarter = None
    if period != "annual":
        number = int(period[1])
        quarter = {"id": number, "quarterName": QUARTER_NAMES[number - 1]}
    return {
        "id": entry_id,
        "activeStatus": "A",
        "modifiedDate": modified,
        "fiscalReport": {
            "quarterMaster": quarter,
            "reportTypeMaster": {
                "id": 1 if period == "annual" else 2,
                "reportName": "Annual Report" if period == "annual" else "Quarterly Report",
            },
            "financialYear": _fiscal_year_wire(year),
            "epsValue": row[3],
            "peValue": row[4],
            "netWorthPerShare": row[5],
            "paidUpCapital": row[6],
            "profitAmount": row[7],
            "remarks": None,
        },
        "applicationDocumentDetailsList": [],
    }


def _generate(seed: int, count: int) -> list[DemoSecurity]:
    rng = random.Random(seed)
    ids = rng.sample(range(101, 101 + max(count * 4, 4000)), count)
    used: set[str] = set()
    equities: list[tuple[str, str, int]] = []
    securities = []
    for index in range(count):
        kind = rng.choices([k for k, _ in INSTRUMENTS], [w for _, w in INSTRUMENTS])[0]
        if kind != "Equity" and not equities:
            kind = "Equity"
        if kind == "Equity":
            if len(equities) < len(KNOWN_SYMBOLS):
                symbol, stem, sector_index = KNOWN_SYMBOLS[len(equities)]
            else:
                stem = (
                    f"{rng.choice(PLACES)} {rng.choice(PLACES)}"
                    if rng.random() < 0.3
                    else rng.choice(PLACES)
                )
                sector_index = rng.randrange(len(SECTORS))
                symbol = _fresh_symbol(rng, stem, used)
            used.add(symbol)
            equities.append((symbol, stem, sector_index))
            sector, suffix, regulator = SECTORS[sector_index]
            name = f"{stem} {suffix}"
            security_name = name
        else:
            base_symbol, stem, sector_index = rng.choice(equities)
            sector, suffix, regulator = SECTORS[sector_index]
            name = f"{stem} {suffix}"
            if kind == "Promoter Share":
                symbol = _fresh_symbol(rng, stem, used, prefix=base_symbol, suffix="PO")
                security_name = f"{name} Promoter Share"
            elif kind == "Non-Convertible Debentures":
                symbol = _fresh_symbol(
                    rng, stem, used, prefix=base_symbol, suffix=f"D{rng.randrange(80, 90)}"
                )
                security_name = (
                    f"{rng.randrange(8, 12)}% {name} Debenture 20{rng.randrange(85, 95)}"
                )
                sector, regulator = "Corporate Debenture", "Securities Board of Nepal"
            else:
                symbol = _fresh_symbol(rng, stem, used, prefix=base_symbol[:3], suffix="MF")
                name = security_name = f"{stem} Mutual Fund {rng.randrange(1, 4)}"
                sector, regulator = "Mutual Fund", "Securities Board of Nepal"
            used.add(symbol)
        status = rng.choices(["A", "S", "D"], [0.94, 0.03, 0.03])[0]
        listed = date(2005, 1, 1) + timedelta(days=rng.randrange(0, 7580))  # to late 2025
        securities.append(
            DemoSecurity(
                security_id=ids[index],
                company_id=1000 + index,
                symbol=symbol,
                name=name,
                security_name=security_name,
                sector=sector,
                regulator=regulator,
                instrument_type=kind,
                status=status,
                listed=listed,
                base_price=rng.uniform(80, 1500)
                if kind != "Non-Convertible Debentures"
                else 1000.0,
                drift=rng.gauss(0.03, 0.08),
                swing=(
                    rng.uniform(0.05, 0.35),
                    rng.uniform(300, 1500),
                    rng.uniform(0.02, 0.12),
                    rng.uniform(20, 120),
                ),
                phases=(rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)),
                illiquidity=max(
                    rng.choice([0.0, 0.0, 0.01, 0.03, 0.08, 0.15]), ILLIQUIDITY.get(kind, 0.0)
                ),
                base_volume=int(rng.lognormvariate(9, 1)),
                listed_shares=rng.randrange(5, 900) * 100_000,
                promoter_pct=0.0 if kind == "Mutual Fund" else rng.choice([51.0, 60.0, 70.0, 65.5]),
            )
        )
    return securities


def _fresh_symbol(
    rng: random.Random, stem: str, used: set[str], prefix: str = "", suffix: str = ""
) -> str:
    letters = "".join(c for c in stem.upper() if c.isalpha())
    base = prefix or letters[: rng.randrange(3, 6)]
    candidate = f"{base}{suffix}"
    while candidate in used:
        base += rng.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ")
        candidate = f"{base}{suffix}"
    return candidate
