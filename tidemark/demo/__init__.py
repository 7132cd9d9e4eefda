"""The demo source "shop": schema, history seed and OLTP load generator."""
