"""The dashboard: one page per site (GET /dashboard, /dashboard/{site_id}) from the template and
static files beside this module; its script reads the stats API (docs/dashboard.md)."""
